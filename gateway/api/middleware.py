"""Cross-cutting concerns as one raw ASGI middleware: request id, metrics, access log,
and a client that goes away before its answer.

Raw ASGI (not Litestar's middleware classes) because it runs on every request
and must cost next to nothing. The controller fills ``scope["gw"]`` (a
``RequestInfo``) with labels the log and metrics need.

Every metric label is drawn from a closed set, whatever the client sends:
methods outside the standard nine count as ``OTHER``, paths that match no route
as ``unmatched``, statuses that HTTP does not define as their class (``4xx``).

A client that leaves is not a server error. It is counted as 499 (nginx's
"client closed request") and logged only in its access line:

* while sending its body: reading the body raises ``ClientClosed`` (a 400 that the
  closed connection never receives) instead of Litestar's 500;
* after its body, before the answer started: ``_Edge`` watches ``receive()`` for
  ``http.disconnect`` (from ``WATCH_AFTER_S`` on) and cancels the request's task.
  The cancellation unwinds the attempt loop (retries, fallbacks and hedges stop;
  the upstream request is closed), and the controllers refund the rate-limit
  reservation and release the cache fill they lead;
* once a stream was committed, Litestar's streaming response hears the
  disconnect (through the same watcher) and closes the relay, as before; the
  status stays the 200 already sent.
"""

from __future__ import annotations

import asyncio
import os
import time
from http import HTTPStatus
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from gateway.errors import InvalidRequest
from gateway.telemetry import logging as gwlog
from gateway.telemetry import metrics

# Each route and the method it serves: the only values the route label takes, besides
# UNMATCHED. (Every route is a fixed path, so the path is its template.)
ROUTES: dict[str, str] = {
    "/v1/chat/completions": "POST",
    "/v1/embeddings": "POST",
    "/v1/models": "GET",
    "/v1/messages": "POST",
    "/v1/messages/count_tokens": "POST",
    "/health": "GET",
    "/health/live": "GET",
    "/health/ready": "GET",
}
UNMATCHED = "unmatched"
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
OTHER_METHOD = "OTHER"
CLIENT_CLOSED = 499  # nginx's "client closed request": not a server error
# A request still running this long after its body starts watching for the client
# leaving: a disconnect is acted on within about this much, and the many answers that
# are over sooner (cache hits, fast upstreams) never pay for the watcher's task.
WATCH_AFTER_S = 0.05
# Status labels: the statuses HTTP defines, and 499; any other number counts as its class.
_STATUS_LABELS = {int(s): str(int(s)) for s in HTTPStatus} | {CLIENT_CLOSED: str(CLIENT_CLOSED)}
_DISCONNECT: ReceiveMessage = {"type": "http.disconnect"}


def status_label(status: int) -> str:
    label = _STATUS_LABELS.get(status)
    if label is None:
        label = f"{min(max(status // 100, 1), 5)}xx"
    return label


class ClientClosed(InvalidRequest):
    """The client closed the connection before its request body was complete."""

    code = "client_closed_request"


class RequestInfo:
    """Per-request facts for logs and metrics: ids, labels and numbers only."""

    __slots__ = (
        "client_closed",
        "error",
        "model",
        "provider",
        "request_id",
        "start",
        "status",
        "upstream_s",
    )

    def __init__(self, request_id: str, start: float) -> None:
        self.request_id = request_id
        self.start = start
        self.status = 0  # set when the response starts
        self.model: str | None = None
        self.provider: str | None = None
        self.error: str | None = None
        self.upstream_s = 0.0  # time spent waiting on the provider
        self.client_closed = False  # the client left before the response started


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


class _Edge:
    """The request's ``receive``, watched for the client leaving.

    Until the body is complete, messages pass through; a disconnect then raises
    ``ClientClosed``. Once it is complete, ASGI has nothing more to deliver but
    ``http.disconnect`` (also sent when the response is over), so a watcher task
    waits for it: before the response started, it cancels the request's task; in
    any case it answers the app's own ``receive()`` calls (Litestar's streaming
    response listens for the disconnect that way). The watcher starts only when a
    request outlives ``WATCH_AFTER_S`` (or the app listens itself): most answers
    that come from the cache or a fast upstream are over before, and cost no task.
    """

    __slots__ = ("_gone", "_info", "_receive", "_task", "_timer", "_watcher", "cancelled")

    def __init__(self, receive: Receive, info: RequestInfo, task: asyncio.Task[Any] | None) -> None:
        self._receive = receive
        self._info = info
        self._task = task
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._gone: asyncio.Event | None = None
        self.cancelled = False  # the watcher cancelled the task: the client left

    async def receive(self) -> ReceiveMessage:
        if self._timer is not None:  # the body is complete: wait with the watcher
            gone = self._watch()
            await gone.wait()
            return _DISCONNECT
        message = await self._receive()
        if message["type"] == "http.disconnect":
            if self._info.status == 0:
                self._info.client_closed = True
                raise ClientClosed("The client closed the connection before its body was complete")
        elif not message.get("more_body", False) and self._task is not None:
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._watch)
        return message

    def _watch(self) -> asyncio.Event:
        """Start the watcher (once); the event it sets when the client is gone."""
        gone = self._gone
        if gone is None:
            assert self._timer is not None
            self._timer.cancel()
            gone = self._gone = asyncio.Event()
            self._watcher = asyncio.get_running_loop().create_task(self._wait(gone))
        return gone

    async def _wait(self, gone: asyncio.Event) -> None:
        message = await self._receive()
        if message["type"] != "http.disconnect":
            return  # not ASGI after a complete body; nothing to watch
        gone.set()
        task = self._task
        if self._info.status == 0 and task is not None and not task.done():
            self._info.client_closed = True
            self.cancelled = True
            task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()
        task = self._task
        if self.cancelled and task is not None and task.cancelling():
            task.uncancel()  # our own cancellation, handled: the task goes on normally


def gateway_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        info = RequestInfo(_request_id(scope["headers"]), start)  # type: ignore[arg-type]
        scope["gw"] = info  # type: ignore[typeddict-unknown-key]
        rid = info.request_id.encode()
        edge = _Edge(receive, info, asyncio.current_task())

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
                headers = message.get("headers")
                hs = list(headers) if headers else []
                hs.append((b"x-request-id", rid))
                message["headers"] = hs
            await send(message)

        try:
            await app(scope, edge.receive, send_wrapper)
        except asyncio.CancelledError:
            if not edge.cancelled:
                raise
        finally:
            edge.close()
            _record(scope, info)

    return middleware


def _record(scope: Scope, info: RequestInfo) -> None:
    duration = time.perf_counter() - info.start
    path = scope["path"]
    route = path if path in ROUTES else UNMATCHED
    method = scope["method"]  # type: ignore[typeddict-item]
    if method not in METHODS:
        method = OTHER_METHOD
    if info.client_closed:
        status = CLIENT_CLOSED
        info.error = "client_closed_request"
    else:
        status = info.status or 500
    metrics.http_requests_total.labels(method, route, status_label(status)).inc()
    metrics.http_request_duration_seconds.labels(method, route).observe(duration)
    if route != UNMATCHED and info.model is not None and not info.client_closed:
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
