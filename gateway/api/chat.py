"""POST /v1/chat/completions: reads top to bottom as the pipeline.

In the order the code runs (numbers are ARCHITECTURE.md's stage numbers):
  parse and validate   body -> dict (forwarded) + ChatRequest (checked)
1 auth                 caller key -> Principal (tenant, limits, allowed models): 401/403
3 cache                exact match per tenant: a HIT returns here; a MISS is stored at 7
4 route                model -> group -> the first deployment to try
2 rate limit           reserve RPM+TPM on every scope in one atomic call, else 429; after
                       3-4 so a cache hit costs no quota and the routed deployment is known
5+6 adapt and relay    the attempt loop: the adapter builds each upstream request, the relay
                       sends it; retries, fallbacks, breakers; a stream is committed at its
                       first content event
7 settle               usage, latency and outcome -> metrics; headers for the client; the
                       reservation settled to the real usage (streams: when they close)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, post
from litestar.response import Stream

from gateway.api.body import decode_object, read_body, validate
from gateway.errors import GatewayError
from gateway.pipeline import attempts, settle
from gateway.state import Gateway
from gateway.telemetry import metrics
from gateway.wire.chat import ChatRequest

if TYPE_CHECKING:
    from gateway.pipeline.cache import Lookup
    from gateway.pipeline.ratelimit import Lease

_JSON = "application/json"


@contextmanager
def unanswered(lease: Lease, cached: Lookup | None = None) -> Iterator[None]:
    """Around the attempt loop: no answer gives the reservation back. An upstream error
    refunds it (its response gets the x-ratelimit headers); a client that left (the edge
    cancelled the request's task) refunds it and releases the cache fill it leads, so
    identical waiting requests go upstream themselves at once."""
    try:
        yield
    except GatewayError as err:
        lease.fail(err)
        raise
    except asyncio.CancelledError:
        lease.refund()
        if cached is not None:
            cached.abandon()
        raise


def _headers(dep_provider: str, overhead_s: float, upstream_s: float) -> dict[str, str]:
    return {
        "x-gateway-provider": dep_provider,
        "server-timing": (
            f"gateway;dur={overhead_s * 1000:.3f}, upstream;dur={upstream_s * 1000:.3f}"
        ),
    }


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    gw: Gateway = request.app.state.gw
    info = request.scope["gw"]  # type: ignore[typeddict-item]
    settings = gw.settings

    body = decode_object(await read_body(request, settings.max_body_bytes), settings.max_json_depth)
    req = validate(body, ChatRequest)
    principal = gw.auth.authenticate(request, req.model, gw.registry.resolve)  # 1 auth
    group = gw.registry.resolve(req.model)
    info.model = group.label
    cached = await gw.cache.lookup(request, "chat", body, group)  # 3 cache
    if cached.entry is not None:
        return cached.response()
    stream = bool(req.stream)
    dep = attempts.first_choice(gw, group, body, stream)  # 4 route: retries/fallbacks in 6
    info.provider = dep.provider
    lease = await gw.limiter.reserve(principal, group, dep, body)  # 2 rate limit: 429 here

    if not stream:
        t_sent = time.perf_counter()
        with unanswered(lease, cached):
            served = await attempts.complete(
                gw,
                group,
                body,
                lambda d: d.adapter.chat_request(d, body, False),
                lambda d, content: d.adapter.chat_response(d, content),
                first=dep,
                info=info,
                lease=lease,
            )
        dep, (out, usage) = served.dep, served.result
        upstream_s = time.perf_counter() - t_sent
        info.upstream_s = upstream_s
        settle.record_success(dep, upstream_s, usage)
        lease.settle(usage)  # reserved tokens -> real usage
        cached.store(out, dep.provider, usage)
        overhead = time.perf_counter() - info.start - upstream_s
        headers = cached.mark(_headers(dep.provider, overhead, upstream_s))
        headers["x-gateway-attempts"] = str(served.attempts)
        lease.apply(headers)
        return Response(out, media_type=_JSON, headers=headers)

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    t_sent = time.perf_counter()

    on_close = settle.stream_closer(info, lease, t_sent)

    with unanswered(lease, cached):
        streamed = await attempts.stream(
            gw,
            group,
            body,
            lambda d: d.adapter.chat_request(d, body, True),
            lambda d: d.adapter.chat_stream(d, include_usage),
            on_close,
            first=dep,
            info=info,
            lease=lease,
        )
    dep, stream_relay, ttft = streamed.dep, streamed.result, streamed.ttft
    metrics.llm_time_to_first_token_seconds.labels(dep.provider, dep.label).observe(ttft)
    overhead = time.perf_counter() - info.start - ttft
    headers = cached.mark(_headers(dep.provider, overhead, ttft))
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"  # tell nginx-style proxies not to buffer the stream
    headers["x-gateway-attempts"] = str(streamed.attempts)
    lease.apply(headers)
    frames = cached.frames(stream_relay, dep.provider)  # stored once complete
    frames = lease.metered(frames)  # counts relayed events for settle_stream
    return Stream(frames, media_type="text/event-stream", headers=headers)
