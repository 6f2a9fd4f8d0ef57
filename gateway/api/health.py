"""Health: /health (JSON with each provider's state), /health/live, /health/ready.

``/health/live`` and ``/health/ready`` are open: probes carry no credentials and
learn nothing but up or down. ``/health``'s details (deployments, breakers,
routing, limits mode) are for operators: they go to a request that presents the
admin key (``GATEWAY_MASTER_KEY``, as ``Authorization: Bearer`` or ``x-api-key``,
compared in constant time); anyone else gets the summary, ``status`` and
``version``. A gateway with no ``keys:`` and no master key is open to every caller
anyway (a development set-up), so there everyone sees the details; as soon as
either is configured, only the admin key does.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import msgspec
from litestar import Request, Response, get

from gateway import __version__
from gateway.pipeline.auth import presented_key
from gateway.state import Gateway

_encode = msgspec.json.Encoder().encode


def _json(obj: Any, status: int = 200) -> Response[bytes]:
    return Response(_encode(obj), status_code=status, media_type="application/json")


@get("/health/live")
async def live() -> Response[bytes]:
    return _json({"status": "ok"})


@get("/health/ready")
async def ready(gw: Gateway) -> Response[bytes]:
    if gw.drain.draining:  # shutting down: take this pod out of the load balancer first
        return _json({"status": "draining", "state_backend": gw.store.kind}, 503)
    ok = await gw.store.ping()
    return _json(
        {"status": "ready" if ok else "unavailable", "state_backend": gw.store.kind},
        200 if ok else 503,
    )


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def shows_details(request: Request[Any, Any, Any], gw: Gateway) -> bool:
    """May this request see /health's details? See the module docstring."""
    master = gw.settings.master_key
    if master is None:
        return not gw.auth.closed
    key = presented_key(request.headers)
    if not key or len(key) > 4096:
        return False
    # Digests first: equal lengths, so the comparison's time says nothing about the key.
    return hmac.compare_digest(_sha256(key), _sha256(master.reveal()))


@get("/health")
async def health(request: Request[Any, Any, Any], gw: Gateway) -> Response[bytes]:
    store_ok = await gw.store.ping()
    # healthy=False: a hot-path call failed and limits run on the local fallback until
    # the backend's probe sees it answer again (ping alone may already succeed).
    fallback = not gw.store.healthy
    status = "ok" if store_ok and not fallback else "degraded"
    if not shows_details(request, gw):
        return _json({"status": status, "version": __version__})
    limits_mode = "shared" if gw.store.shared else "in-process"
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
            "status": status,
            "version": __version__,
            "uptime_s": round(time.time() - gw.started_at, 1),
            "state_backend": {"kind": gw.store.kind, "ok": store_ok},
            "rate_limits": limits_mode,
            "providers": providers,
            "models": sorted(gw.registry.groups),
            "routing": gw.router.health(gw.registry.groups),  # breakers per deployment
            "speedups": gw.speedups,
            # which config is live: reloads (SIGHUP, a changed file) change the hash
            "config": {"path": gw.settings.config_path, "sha256": gw.settings.config_sha256},
            "tenants": {  # virtual keys: on with the master key; their cache's channel
                "virtual_keys": gw.tenants.enabled,
                "key_pepper": gw.tenants.peppered,
                "invalidation": gw.tenants.store.subscribed,
            },
        }
    )
