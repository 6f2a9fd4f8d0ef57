"""The one request pipeline: every endpoint runs these stages, in this order.

    parse     body -> dict (forwarded) + the endpoint's Struct (checked)      400/413
    auth      caller key -> Principal; model -> group                          401/403/404
    cache     exact match per tenant: a HIT answers here                      (x-gateway-cache)
    route     group -> the deployments in the order to try them
    limit     reserve RPM + TPM on every scope in one atomic call              429/503
    attempts  adapter builds, relay sends; retries, fallbacks, hedges          502/504/4xx
    settle    real usage -> reservation, metrics, cache store (streams: at their end)
    respond   the headers and the Reply

Each stage is an object with a ``name`` and ``async __call__(ctx) -> Reply | None``
(``None``: go on; a ``Reply``: answer now). The list is data: operator plugins
from the config (``plugins:``) are inserted ``before_<stage>`` or ``after_<stage>``
(``gateway/plugins``; not ``after_respond``: the stage that answers ends the list).
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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from gateway.errors import GatewayError
from gateway.pipeline.reply import Reply

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.endpoint import Endpoint

__all__ = ["STAGES", "Pipeline", "Stage", "StageFailed"]

log = logging.getLogger("gateway.pipeline")

STAGES = ("parse", "auth", "cache", "route", "limit", "attempts", "settle", "respond")
# Where the config may put a plugin. Not after ``respond``: it returns the reply, and
# nothing after the stage that answers ever runs.
POSITIONS = frozenset(f"{when}_{s}" for s in STAGES for when in ("before", "after")) - {
    "after_respond"
}


class Stage(Protocol):
    name: str

    async def __call__(self, ctx: RequestContext) -> Reply | None: ...


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

    def __init__(self, stages: Sequence[Stage]) -> None:
        names = tuple(s.name for s in stages)
        missing = [s for s in STAGES if s not in names]
        if missing:
            raise ValueError(f"pipeline without stage(s) {missing}")
        self.stages = tuple(stages)

    async def run(self, endpoint: Endpoint, ctx: RequestContext) -> Reply:
        ctx.endpoint = endpoint
        try:
            for stage in self.stages:
                reply = await stage(ctx)
                if reply is not None:
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
