"""POST /v1/embeddings: validate, cache, route, relay, settle."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, post

from gateway.api.body import decode_object, read_body, validate
from gateway.api.chat import _headers, unanswered
from gateway.pipeline import attempts, settle
from gateway.state import Gateway
from gateway.wire.embeddings import EmbeddingsRequest


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request[Any, Any, Any]) -> Response[Any]:
    gw: Gateway = request.app.state.gw
    info = request.scope["gw"]  # type: ignore[typeddict-item]
    settings = gw.settings

    body = decode_object(await read_body(request, settings.max_body_bytes), settings.max_json_depth)
    req = validate(body, EmbeddingsRequest)
    principal = gw.auth.authenticate(request, req.model, gw.registry.resolve)  # 1 auth
    group = gw.registry.resolve(req.model)
    info.model = group.label
    cached = await gw.cache.lookup(request, "embeddings", body, group)  # 3 cache
    if cached.entry is not None:
        return cached.response()
    dep = attempts.first_choice(gw, group, body, False)  # 4 route: retries/fallbacks in 6
    info.provider = dep.provider
    lease = await gw.limiter.reserve(principal, group, dep, body, "embeddings")  # 2 rate limit
    t_sent = time.perf_counter()
    with unanswered(lease, cached):
        served = await attempts.complete(
            gw,
            group,
            body,
            lambda d: d.adapter.embeddings_request(d, body),
            lambda d, content: d.adapter.embeddings_response(d, content),
            first=dep,
            info=info,
            lease=lease,
        )
    dep, (out, usage) = served.dep, served.result
    upstream_s = time.perf_counter() - t_sent
    info.upstream_s = upstream_s
    settle.record_success(dep, upstream_s, usage)
    lease.settle(usage)
    cached.store(out, dep.provider, usage)
    overhead = time.perf_counter() - info.start - upstream_s
    headers = cached.mark(_headers(dep.provider, overhead, upstream_s))
    headers["x-gateway-attempts"] = str(served.attempts)
    lease.apply(headers)
    return Response(out, media_type="application/json", headers=headers)
