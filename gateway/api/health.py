"""Health: /health (JSON with each provider's state), /health/live, /health/ready."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Response, get

from gateway import __version__
from gateway.state import Gateway

_encode = msgspec.json.Encoder().encode


def _json(obj: Any, status: int = 200) -> Response[bytes]:
    return Response(_encode(obj), status_code=status, media_type="application/json")


@get("/health/live")
async def live() -> Response[bytes]:
    return _json({"status": "ok"})


@get("/health/ready")
async def ready(gw: Gateway) -> Response[bytes]:
    ok = await gw.store.ping()
    return _json(
        {"status": "ready" if ok else "unavailable", "state_backend": gw.store.kind},
        200 if ok else 503,
    )


@get("/health")
async def health(gw: Gateway) -> Response[bytes]:
    store_ok = await gw.store.ping()
    # healthy=False: a hot-path call failed and limits run on the local fallback until
    # the backend's probe sees it answer again (ping alone may already succeed).
    fallback = not gw.store.healthy
    limits_mode = "in-process" if gw.store.kind == "memory" else "shared"
    if fallback:
        limits_mode = "local-fallback" if gw.limiter.policy == "open" else "closed-503"
    providers: dict[str, Any] = {}
    for name in gw.registry.enabled():
        deployments = sum(
            1 for g in gw.registry.groups.values() for d in g.deployments if d.provider == name
        )
        providers[name] = {"state": "enabled", "configured_deployments": deployments}
    return _json(
        {
            "status": "ok" if store_ok and not fallback else "degraded",
            "version": __version__,
            "uptime_s": round(time.time() - gw.started_at, 1),
            "state_backend": {"kind": gw.store.kind, "ok": store_ok},
            "rate_limits": limits_mode,
            "providers": providers,
            "models": sorted(gw.registry.groups),
            "routing": gw.router.health(gw.registry.groups),  # breakers per deployment
            "speedups": gw.speedups,
        }
    )
