"""The one request pipeline: every endpoint runs these stages, in this order.

    parse     body -> dict (forwarded) + the endpoint's Struct (checked)      400/413
    auth      caller key -> Principal; model -> group                          401/403/404
    cache     exact match per tenant: a HIT answers here                      (x-gateway-cache)
              (on Redis it may route early and send the limit's reservation with
              its lookup, made only on a miss: ``CacheStage``)
    route     group -> the deployments in the order to try them
    limit     reserve RPM + TPM on every scope in one atomic call              429/503
    attempts  adapter builds, relay sends; retries, fallbacks, hedges          502/504/4xx
    settle    real usage -> reservation, metrics, cache store (streams: at their end)
    respond   the headers and the Reply

Each stage is an object with a ``name``, called as ``stage(ctx)``: ``None`` (go
on), a ``Reply`` (answer now), or an awaitable of either when it has I/O to do.
The list is data: operator plugins from the config (``plugins:``) are inserted
``before_<stage>`` or ``after_<stage>`` (``gateway/plugins``; not
``after_respond``: the stage that answers ends the list).
A stage may raise a ``GatewayError``: the request then ends in ``fail`` with the
endpoint's error shape, its reservation refunded, its cache fill released and a
stream already opened upstream closed. A client that goes away (the edge cancels
the task) unwinds through ``abort``, which does the same and counts it as
client-closed.
Anything else is a bug: logged with the request id, answered with a 500 in the
endpoint's shape, never a traceback to the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gateway.errors import GatewayError
from gateway.pipeline.reply import Reply

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.endpoint import Endpoint
    from gateway.telemetry.tracing import Tracer

__all__ = ["STAGES", "Pipeline", "Stage", "StageFailed"]

log = logging.getLogger("gateway.pipeline")

STAGES = ("parse", "auth", "cache", "route", "limit", "attempts", "settle", "respond")
# Where the config may put a plugin. Not after ``respond``: it returns the reply, and
# nothing after the stage that answers ever runs.
POSITIONS = frozenset(f"{when}_{s}" for s in STAGES for when in ("before", "after")) - {
    "after_respond"
}


class Stage(Protocol):
    """``stage(ctx)``: None (go on), a ``Reply`` (answer now), or an awaitable of either.
    A stage with no I/O to do answers at once, without the cost of a coroutine."""

    name: str

    def __call__(self, ctx: RequestContext) -> Reply | Awaitable[Reply | None] | None: ...


async def call(stage: Stage, ctx: RequestContext) -> Reply | None:
    """Run one stage to its end, sync or async (for wrappers of stages)."""
    result = stage(ctx)
    if result is None or isinstance(result, Reply):
        return result
    return await result


@runtime_checkable
class Optional(Protocol):
    """A stage that has nothing to do for some endpoints (or in some configurations)
    says so once, when an endpoint's stage list is made, instead of on every request."""

    def applies(self, endpoint: Endpoint) -> bool: ...


def applies(stage: Stage, endpoint: Endpoint) -> bool:
    if isinstance(stage, Optional):
        return stage.applies(endpoint)
    return True


class StageFailed(Exception):
    """An operator stage (plugin) raised something that is not a GatewayError."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"{stage}: {type(exc).__name__}")
        self.stage = stage
        self.exc = exc


def insert(core: Sequence[Stage], extra: Sequence[tuple[str, Stage]]) -> tuple[Stage, ...]:
    """The core stages with ``(position, stage)`` pairs placed where each position says,
    in the order given (two plugins at one position run in config order)."""
    out: list[Stage] = []
    for stage in core:
        out.extend(s for at, s in extra if at == f"before_{stage.name}")
        out.append(stage)
        out.extend(s for at, s in extra if at == f"after_{stage.name}")
    return tuple(out)


class Pipeline:
    """The stage list and the two ways a request can end early (fail, abort)."""

    def __init__(self, stages: Sequence[Stage], tracer: Tracer | None = None) -> None:
        names = tuple(s.name for s in stages)
        missing = [s for s in STAGES if s not in names]
        if missing:
            raise ValueError(f"pipeline without stage(s) {missing}")
        # Tracing wraps the stages that take time in spans, here and only here; off, the
        # stages are the objects themselves and the loop below costs nothing more.
        self._pairs = [(s, tracer.traced(s) if tracer else s) for s in stages]
        self.stages = tuple(run for _, run in self._pairs)
        self._by_endpoint: dict[str, tuple[Stage, ...]] = {}

    def replace(self, other: Pipeline) -> None:
        """Take ``other``'s stages (a reload): requests in flight finish on the old ones."""
        self._pairs = other._pairs
        self.stages = other.stages
        self._by_endpoint = {}

    def stages_for(self, endpoint: Endpoint) -> tuple[Stage, ...]:
        """The stages that apply to ``endpoint``, in order (made at its first request)."""
        stages = self._by_endpoint.get(endpoint.name)
        if stages is None:
            stages = tuple(run for s, run in self._pairs if applies(s, endpoint))
            self._by_endpoint[endpoint.name] = stages
        return stages

    async def run(self, endpoint: Endpoint, ctx: RequestContext) -> Reply:
        ctx.endpoint = endpoint
        try:
            for stage in self.stages_for(endpoint):
                reply = stage(ctx)
                if reply is None:
                    continue
                if type(reply) is not Reply:  # an async stage's awaitable
                    reply = await reply  # type: ignore[misc]
                    if reply is None:
                        continue
                return reply
            raise RuntimeError("the respond stage produced no reply")  # pragma: no cover
        except GatewayError as err:
            await close_unsent(ctx)
            return fail(ctx, err)
        except asyncio.CancelledError:
            await close_unsent(ctx)
            abort(ctx)
            raise
        except StageFailed as exc:
            await close_unsent(ctx)
            log.error(
                "plugin failed",
                exc_info=exc.exc,
                extra={"fields": _fields(ctx, plugin=exc.stage, error=type(exc.exc).__name__)},
            )
            return crash(ctx, f"plugin {exc.stage} failed")
        except Exception as exc:
            await close_unsent(ctx)
            log.error(
                "unhandled error",
                exc_info=exc,
                extra={"fields": _fields(ctx, error=type(exc).__name__)},
            )
            return crash(ctx, "Internal gateway error")


def _fields(ctx: RequestContext, **kw: str) -> dict[str, str]:
    out = {"request_id": ctx.request_id, "route": ctx.route}
    out.update(kw)
    return out


async def close_unsent(ctx: RequestContext) -> None:
    """A stream that was opened upstream but will never be relayed (a stage after
    ``attempts`` ended the request): close it now, which runs its close hooks (the
    attempt loop's bookkeeping, and a settle already registered), rather than leave
    the provider streaming to nobody until its own timeout."""
    served = ctx.served
    if served is not None and ctx.stream:  # a StreamRelay, or a keep-alive PendingStream
        await served.result.aclose()


def _release(ctx: RequestContext, err: GatewayError | None) -> None:
    """Give back what the request held: its reservation (refunded) and cache fill."""
    lease = ctx.lease
    if lease is not None:
        lease.fail(err)
    pending = ctx.reserving  # sent with the cache lookup, never collected
    if pending is not None:
        ctx.reserving = None
        pending.undo()
    cache = ctx.cache
    if cache is not None:
        cache.abandon()


def fail(ctx: RequestContext, err: GatewayError) -> Reply:
    """A GatewayError: the endpoint's error shape, with what the request already knows."""
    _release(ctx, err)
    ctx.error = err.code or err.type
    headers = dict(ctx.headers)
    headers.update(err.headers)
    endpoint = ctx.endpoint
    assert endpoint is not None
    return Reply(err.status, headers, endpoint.errors.body(err))


def abort(ctx: RequestContext) -> None:
    """The client went away before the answer started: refund, release, count it."""
    _release(ctx, None)
    ctx.client_gone = True
    ctx.error = "client_closed"


def crash(ctx: RequestContext, what: str) -> Reply:
    _release(ctx, None)
    err = GatewayError(f"{what} (request id {ctx.request_id})", code="internal_error")
    ctx.error = "internal_error"
    endpoint = ctx.endpoint
    assert endpoint is not None
    return Reply(500, dict(ctx.headers), endpoint.errors.body(err))
