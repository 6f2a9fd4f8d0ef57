"""The edge: a plain ASGI callable around the Litestar app (``create_app`` returns it).

For every HTTP request it makes the ``RequestContext`` (request id, start time)
and dispatches: a pipeline endpoint (a fixed path, ``api/routes.py``) gets the
context handed to it directly; anything else goes to Litestar, with the context
left in the scope for its error handlers. It adds ``x-request-id`` to the answer,
and when the answer is done records the HTTP metrics and the access line from
what the stages wrote into the context. It wraps Litestar from outside, so 404
and 405 answers get a request id, a metric and an access line too. Raw ASGI because it runs on
every request and must cost next to nothing; lifespan passes straight through.

Every metric label is drawn from a closed set, whatever the client sends:
methods outside the standard nine count as ``OTHER``, paths that match no route
as ``unmatched``, statuses that HTTP does not define as their class (``4xx``).

A client that leaves is not a server error. It is counted as 499 (nginx's
"client closed request") and logged only in its access line:

* while sending its body: reading the body raises ``ClientClosed`` (a 400 that the
  closed connection never receives) instead of a 500;
* after its body, before the answer started: ``_Watch`` watches ``receive()`` for
  ``http.disconnect`` (from ``WATCH_AFTER_S`` on) and cancels the request's task.
  The cancellation unwinds the attempt loop (retries, fallbacks and hedges stop;
  the upstream request is closed), and the pipeline (``run.abort``) refunds the
  rate-limit reservation and releases the cache fill the request leads;
* once a stream was committed, the same watcher cancels the task too: the reply
  closes its relay, which closes the upstream and settles what was relayed; the
  status stays the 200 already sent.

Every request is in ``gw.drain.inflight`` while it runs: at the drain's deadline
(``gateway/drain.py``) it is cancelled the same way, with ``ctx.stopped`` set,
and the edge then answers it with a 503 or ends its stream with the error event.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType

from gateway.api.compress import GzipSend, accepts_gzip
from gateway.drain import finish
from gateway.errors import ClientClosed
from gateway.pipeline.context import SCOPE_KEY, RequestContext
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Message, Receive, ReceiveMessage, Scope, Send

    from gateway.api.routes import EndpointApp
    from gateway.errors import ServiceUnavailable
    from gateway.state import Gateway
    from gateway.telemetry.logging import AccessLog

__all__ = ["METHODS", "ROUTES", "UNMATCHED", "Edge", "status_label"]

# Each route and the method it serves: the only values the route label takes, besides
# UNMATCHED. (Every route is a fixed path, so the path is its template.)
ROUTES: dict[str, str] = {
    "/v1/chat/completions": "POST",
    "/v1/embeddings": "POST",
    "/v1/models": "GET",
    "/v1/messages": "POST",
    "/v1/messages/count_tokens": "POST",
    "/v1/responses": "POST",
    "/v1/responses/{id}": "GET",  # and DELETE; the handlers set this label for every id
    "/health": "GET",
    "/health/live": "GET",
    "/health/ready": "GET",
}
UNMATCHED = "unmatched"
ADMIN = "/admin"  # every /admin/... path (ids in paths never become labels)
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
_SAFE = frozenset(b"-_.:0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def status_label(status: int) -> str:
    label = _STATUS_LABELS.get(status)
    if label is None:
        label = f"{min(max(status // 100, 1), 5)}xx"
    return label


def _client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k == b"x-request-id":
            # Keep a client's id only if it is short and plain: it is echoed and logged.
            if 0 < len(v) <= 128 and all(c in _SAFE for c in v):
                return v.decode("ascii")
            break
    return None


class Edge:
    """``create_app``'s result: Granian (or a test client) calls this."""

    def __init__(
        self,
        app: Litestar,
        gateway: Gateway,
        access: AccessLog,
        endpoints: dict[str, EndpointApp],
    ) -> None:
        self.app = app  # the Litestar app: routing, DI, the non-pipeline handlers
        self.gateway = gateway
        self.access = access
        self.endpoints = endpoints  # the pipeline endpoints, by path (``api/routes.py``)
        # Request ids: unique across processes without a system call per request.
        self._prefix = os.urandom(6).hex()
        self._seq = itertools.count()
        self.inflight = gateway.drain.inflight
        self.sweep = _Sweep(self.inflight)
        self.gzip_min = gateway.settings.gzip_min_bytes  # 0: never compress
        self.tracer = gateway.tracer  # None: tracing off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        method = scope["method"]
        client_id = _client_request_id(scope["headers"])  # type: ignore[arg-type]
        if client_id is None:  # 24 hex digits: this process's random prefix and a counter
            client_id = f"{self._prefix}{next(self._seq):012x}"
        ctx = RequestContext(
            client_id,
            time.perf_counter(),
            method if method in METHODS else OTHER_METHOD,
            path if path in ROUTES else ADMIN if path.startswith("/admin/") else UNMATCHED,
        )
        if self.gzip_min and accepts_gzip(scope["headers"]):  # type: ignore[arg-type]
            send = GzipSend(send, self.gzip_min)
        tracer = self.tracer
        if tracer is not None:
            tracer.start(ctx, scope)
        watch = _Watch(receive, ctx, asyncio.current_task())
        rid = ctx.request_id.encode()
        inflight = self.inflight
        inflight.add(watch)
        self.sweep.arm()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                hs = message.get("headers")
                if type(hs) is not list:  # ours are lists (``send_reply``); others may not be
                    hs = list(hs) if hs else []
                hs.append((b"x-request-id", rid))
                if ctx.trace is not None:
                    hs.append((b"x-trace-id", ctx.trace.trace_id.encode()))
                message["headers"] = hs
            elif not message.get("more_body", False):
                ctx.complete = True
            await send(message)

        endpoint = self.endpoints.get(path)
        try:
            if endpoint is not None:
                await endpoint(ctx, scope, watch.receive, send_wrapper)
            else:
                scope[SCOPE_KEY] = ctx  # type: ignore[literal-required]
                await self.app(scope, watch.receive, send_wrapper)
        except asyncio.CancelledError:
            if ctx.stopped is not None:  # the drain's deadline: answer, never a silent cut
                watch.close()
                await finish(ctx, send_wrapper)
            elif not watch.cancelled:
                raise
        finally:
            inflight.discard(watch)
            watch.close()
            ctx.receive = None  # ctx -> watch.receive -> watch -> ctx: a cycle, broken here
            status = _record(ctx, self.access)
            if tracer is not None and ctx.trace is not None:
                tracer.end(ctx, status)


class _Watch:
    """The request's ``receive``, watched for the client leaving.

    Until the body is complete, messages pass through; a disconnect then raises
    ``ClientClosed``. Once it is complete, ASGI has nothing more to deliver but
    ``http.disconnect`` (also sent when the response is over), so a watcher task
    waits for it and cancels the request's task; in any case it answers the app's
    own ``receive()`` calls. The watcher starts only when a request outlives
    ``WATCH_AFTER_S`` (``_Sweep`` finds those) or the app listens itself: most
    answers that come from the cache or a fast upstream are over before, and cost
    no task and no timer of their own.
    """

    __slots__ = ("_ctx", "_gone", "_receive", "_task", "_watcher", "body_done", "cancelled")

    def __init__(
        self, receive: Receive, ctx: RequestContext, task: asyncio.Task[Any] | None
    ) -> None:
        self._receive = receive
        self._ctx = ctx
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self._gone: asyncio.Event | None = None
        self.body_done = 0.0  # loop time the body was complete (0: not yet)
        self.cancelled = False  # the watcher cancelled the task: the client left

    async def receive(self) -> ReceiveMessage:
        if self.body_done:  # the body is complete: wait with the watcher
            gone = self.watch()
            await gone.wait()
            return _DISCONNECT
        message = await self._receive()
        if message["type"] == "http.disconnect":
            if self._ctx.status == 0:
                self._ctx.client_gone = True
                raise ClientClosed("The client closed the connection before its body was complete")
        elif not message.get("more_body", False) and self._task is not None:
            self.body_done = asyncio.get_running_loop().time()
        return message

    def watch(self) -> asyncio.Event:
        """Start the watcher (once); the event it sets when the client is gone."""
        gone = self._gone
        if gone is None:
            gone = self._gone = asyncio.Event()
            self._watcher = asyncio.get_running_loop().create_task(self._wait(gone))
        return gone

    async def _wait(self, gone: asyncio.Event) -> None:
        message = await self._receive()
        if message["type"] != "http.disconnect":
            return  # not ASGI after a complete body; nothing to watch
        gone.set()
        task = self._task
        ctx = self._ctx
        if task is not None and not task.done() and not ctx.complete:
            ctx.client_gone = True
            self.cancelled = True
            task.cancel()

    def stop(self, err: ServiceUnavailable) -> None:
        """The drain's deadline: cancel the request; the edge then answers it."""
        task = self._task
        if task is not None and not task.done() and self._ctx.stopped is None:
            self._ctx.stopped = err
            self.cancelled = True
            task.cancel()

    def close(self) -> None:
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()
        task = self._task
        if self.cancelled and task is not None and task.cancelling():
            task.uncancel()  # our own cancellation, handled: the task goes on normally


class _Sweep:
    """One timer for the whole process: every ``WATCH_AFTER_S`` it starts the watcher of
    each request whose body came in at least that long ago, and stops re-arming while
    nothing is in flight. (A timer per request would keep every finished request's
    objects alive until it fired, which the garbage collector then walked over and
    over: measured, it made each young-generation collection ten times slower.)"""

    __slots__ = ("_handle", "_inflight")

    def __init__(self, inflight: set[Any]) -> None:
        self._inflight = inflight
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(WATCH_AFTER_S, self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        if not self._inflight:
            return
        due = loop.time() - WATCH_AFTER_S
        for watch in list(self._inflight):
            if isinstance(watch, _Watch) and watch.body_done and watch.body_done <= due:
                watch.watch()
        self._handle = loop.call_later(WATCH_AFTER_S, self._run, loop)


def _record(ctx: RequestContext, access: AccessLog) -> int:
    duration = time.perf_counter() - ctx.start
    route = ctx.route
    method = ctx.method
    closed = ctx.client_gone and ctx.status in (0, 400)  # nothing (useful) was sent
    if closed:
        status = CLIENT_CLOSED
        ctx.error = "client_closed_request"
    else:
        status = ctx.status or 500
    metrics.http_requests_total.labels(method, route, status_label(status)).inc()
    metrics.http_request_duration_seconds.labels(method, route).observe(duration)
    label = ctx.label
    if route != UNMATCHED and label is not None and not closed:
        metrics.gateway_overhead_seconds.labels(route).observe(max(0.0, duration - ctx.upstream_s))
    if not access.enabled:  # above info: no line, so nothing to put together
        return status
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
        fields["attempts"] = ctx.attempts
    if ctx.cache is not None:
        fields["cache"] = ctx.cache.status
    usage = ctx.usage
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
    if ctx.error is not None:
        fields["error"] = ctx.error
    trace = ctx.trace
    if trace is not None:
        fields["trace_id"] = trace.trace_id
    access.write(fields)
    return status
