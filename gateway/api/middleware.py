"""The edge: a plain ASGI callable around the Litestar app (``create_app`` returns it).

For every HTTP request it makes the ``RequestContext`` (request id, start time),
leaves it where the endpoint handler picks it up, adds ``x-request-id`` to the
answer, and when the answer is done records the HTTP metrics and the access
line from what the stages wrote into the context.

It also notices a client that leaves. Once the request body has been read, the
next ``receive()`` only returns when the client disconnects; a watcher task
waits for it and cancels the request's task if its answer is not complete.
Cancellation unwinds through the pipeline: pending upstream attempts are
cancelled and their responses closed, the reservation is refunded, a committed
stream's relay closes its upstream and settles. The request is counted as 499
(client closed) when nothing was sent yet. It wraps Litestar's router
from outside, so 404 and 405 answers get a request id, a metric and an access
line too. Raw ASGI because it runs on every request and must cost next to
nothing; lifespan and other scopes pass straight through.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType

from gateway.pipeline.context import SCOPE_KEY, RequestContext
from gateway.telemetry import logging as gwlog
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Message, Receive, ReceiveMessage, Scope, Send

    from gateway.state import Gateway

__all__ = ["Edge"]

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
_SAFE = frozenset(b"-_.:0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k == b"x-request-id":
            # Keep a client's id only if it is short and plain: it is echoed and logged.
            if 0 < len(v) <= 128 and all(c in _SAFE for c in v):
                return v.decode("ascii")
            break
    return os.urandom(12).hex()


class Edge:
    """``create_app``'s result: Granian (or a test client) calls this."""

    def __init__(self, app: Litestar, gateway: Gateway) -> None:
        self.app = app  # the Litestar app: routing, DI, the non-pipeline handlers
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        ctx = RequestContext(
            _request_id(scope["headers"]),  # type: ignore[arg-type]
            start,
            scope["method"],
            path if path in KNOWN_ROUTES else "other",
        )
        scope[SCOPE_KEY] = ctx  # type: ignore[literal-required]
        watch = _Watch(ctx, receive)
        rid = ctx.request_id.encode()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                headers = message.get("headers")
                hs = list(headers) if headers else []
                hs.append((b"x-request-id", rid))
                message["headers"] = hs
            elif not message.get("more_body", False):
                watch.complete = True
            await send(message)

        try:
            await self.app(scope, watch.receive, send_wrapper)
        except asyncio.CancelledError:
            if not watch.cancelled_it():
                raise
        finally:
            watch.stop()
            _record(ctx)


class _Watch:
    """Reads the request for the app; once its body is in, watches for the client leaving."""

    __slots__ = ("_disconnect", "_receive", "_task", "_watcher", "complete", "ctx")

    def __init__(self, ctx: RequestContext, receive: Receive) -> None:
        self.ctx = ctx
        self._receive = receive
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[ReceiveMessage] | None = None
        self.complete = False  # the whole answer was sent

    async def receive(self) -> ReceiveMessage:
        watcher = self._watcher
        if watcher is not None:  # the body is in: the next message is the disconnect
            return await asyncio.shield(watcher)
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.ctx.client_gone = True
        elif not message.get("more_body", False):
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return message

    async def _watch(self) -> ReceiveMessage:
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self.complete:
            self.ctx.client_gone = True
            if self._task is not None:
                self._task.cancel()
        return message

    def cancelled_it(self) -> bool:
        """Was the request's task cancelled by this watch (the client left)? Then the
        cancellation stops here."""
        task = self._task
        if self.ctx.client_gone and task is not None:
            task.uncancel()
            return True
        return False

    def stop(self) -> None:
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()


def _record(ctx: RequestContext) -> None:
    duration = time.perf_counter() - ctx.start
    route = ctx.route
    method = ctx.method
    status = ctx.status or (499 if ctx.client_gone else 500)
    metrics.http_requests_total.labels(method, route, str(status)).inc()
    metrics.http_request_duration_seconds.labels(method, route).observe(duration)
    label = ctx.label
    if route != "other" and label is not None:
        metrics.gateway_overhead_seconds.labels(route).observe(max(0.0, duration - ctx.upstream_s))
    fields: dict[str, Any] = {
        "msg": "request",
        "request_id": ctx.request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
    }
    if label is not None:
        fields["model"] = label
    if ctx.provider is not None:
        fields["provider"] = ctx.provider
    if ctx.error is not None:
        fields["error"] = ctx.error
    gwlog.access(fields)
