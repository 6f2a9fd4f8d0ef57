"""Cross-cutting concerns as one raw ASGI middleware: request id, metrics, access log.

Raw ASGI (not Litestar's middleware classes) because it runs on every request
and must cost next to nothing. The controller fills ``scope["gw"]`` (a
``RequestInfo``) with labels the log and metrics need.
"""

from __future__ import annotations

import os
import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.telemetry import logging as gwlog
from gateway.telemetry import metrics

KNOWN_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/health",
        "/health/live",
        "/health/ready",
    }
)


class RequestInfo:
    """Per-request facts for logs and metrics: ids, labels and numbers only."""

    __slots__ = ("error", "model", "provider", "request_id", "start", "status", "upstream_s")

    def __init__(self, request_id: str, start: float) -> None:
        self.request_id = request_id
        self.start = start
        self.status = 0
        self.model: str | None = None
        self.provider: str | None = None
        self.error: str | None = None
        self.upstream_s = 0.0  # time spent waiting on the provider


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k == b"x-request-id":
            # Keep a client's id only if it is short and plain: it is echoed and logged.
            if _safe(v):
                return v.decode("ascii")
            break
    return os.urandom(12).hex()


_SAFE = frozenset(b"-_.:0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _safe(v: bytes) -> bool:
    return 0 < len(v) <= 128 and all(c in _SAFE for c in v)


def gateway_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        info = RequestInfo(_request_id(scope["headers"]), start)  # type: ignore[arg-type]
        scope["gw"] = info  # type: ignore[typeddict-unknown-key]
        rid = info.request_id.encode()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
                headers = message.get("headers")
                hs = list(headers) if headers else []
                hs.append((b"x-request-id", rid))
                message["headers"] = hs
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            _record(scope, info)

    return middleware


def _record(scope: Scope, info: RequestInfo) -> None:
    duration = time.perf_counter() - info.start
    path = scope["path"]
    route = path if path in KNOWN_ROUTES else "other"
    method = scope["method"]  # type: ignore[typeddict-item]
    status = info.status or 500
    metrics.http_requests_total.labels(method, route, str(status)).inc()
    metrics.http_request_duration_seconds.labels(method, route).observe(duration)
    if route != "other" and info.model is not None:
        metrics.gateway_overhead_seconds.labels(route).observe(max(0.0, duration - info.upstream_s))
    fields: dict[str, Any] = {
        "msg": "request",
        "request_id": info.request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
    }
    if info.model is not None:
        fields["model"] = info.model
    if info.provider is not None:
        fields["provider"] = info.provider
    if info.error is not None:
        fields["error"] = info.error
    gwlog.access(fields)
