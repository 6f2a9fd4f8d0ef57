"""Graceful drain of one worker process; ``gateway/supervisor.py`` drives it by signal.

The supervisor (``llm-gateway serve``) turns one SIGTERM or SIGINT into this
sequence for each worker:

1. ``SIGUSR1``: ``begin()``. ``/health/ready`` answers 503 at once, so load
   balancers stop sending new requests while the listener still accepts them.
2. ``SIGTERM``, after ``GATEWAY_PRESTOP_SECONDS``: Granian's own handler closes the
   listener (new connections are refused), closes idle keep-alive connections and
   waits for every connection with a request in flight; requests and streams run
   on as usual.
3. ``SIGUSR2``, ``GATEWAY_DRAIN_SECONDS`` later (at once on a second signal):
   ``stop_now()``. Every request still in flight is cancelled with
   ``ctx.stopped`` set: the pipeline refunds or settles it as for a client that
   left (``run.abort``, the relay's close hooks), then the edge answers it with a
   503 in the endpoint's shape, or, for a stream already committed, ends it with
   the endpoint's error event (``finish``). Never a silent cut.

Then Granian sees the last connection end, runs the lifespan's shutdown (traces
flushed, pools closed) and the worker exits 0. ``SIGHUP`` is a reload
(``gateway/reload.py``). Requests are tracked by the edge in ``inflight`` (one
set add and discard per request).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import ServiceUnavailable
from gateway.pipeline.shapes import OPENAI

if TYPE_CHECKING:
    from litestar.types import Send

    from gateway.pipeline.context import RequestContext

__all__ = ["Drain", "finish"]

log = logging.getLogger("gateway.drain")


class Stoppable(Protocol):
    def stop(self, err: ServiceUnavailable) -> None: ...


class Drain:
    """This worker's drain state; the edge registers every request in ``inflight``."""

    __slots__ = ("draining", "inflight", "stopped")

    def __init__(self) -> None:
        self.draining = False  # /health/ready answers 503
        self.stopped: ServiceUnavailable | None = None  # what was in flight was ended
        self.inflight: set[Stoppable] = set()

    def begin(self) -> None:
        if not self.draining:
            self.draining = True
            log.info("draining", extra={"fields": {"in_flight": len(self.inflight)}})

    def stop_now(self) -> None:
        """End every request in flight (the drain's deadline, or a second signal)."""
        self.draining = True
        err = self.stopped = ServiceUnavailable(
            "The gateway is shutting down; retry the request",
            code="shutting_down",
            headers={"retry-after": "1"},
        )
        left = list(self.inflight)
        if left:
            log.warning(
                "drain deadline: ending requests still in flight",
                extra={"fields": {"in_flight": len(left)}},
            )
        for request in left:
            request.stop(err)


async def finish(ctx: RequestContext, send: Send) -> None:
    """Answer a request the drain stopped: a 503 in its endpoint's error shape when
    nothing was sent yet, else (a committed stream) its error event and the end."""
    err = ctx.stopped
    assert err is not None
    ctx.client_gone = False
    ctx.error = err.code
    shape: Any = ctx.endpoint.errors if ctx.endpoint is not None else OPENAI
    try:
        if ctx.status == 0:
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
            body = shape.body(err)
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": err.status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        elif not ctx.complete:
            event = shape.event(err) if ctx.stream else b""
            await send({"type": "http.response.body", "body": event, "more_body": False})
    except Exception:  # the connection is gone meanwhile: nobody is left to tell
        ctx.client_gone = True
