"""Resources owned by the app's lifetime: upstream transports, the state backend, the
tracer, and (in a worker of ``llm-gateway serve``) the drain and reload signals."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from litestar import Litestar

from gateway.pipeline.probes import Prober
from gateway.state import Gateway
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from gateway.pipeline.run import Pipeline

log = logging.getLogger("gateway")
# Generation 0 every ~10,000 net container allocations (a few dozen requests) instead
# of 700 (every request or two); older generations as rarely, relative to it.
GC_THRESHOLDS = (10_000, 50, 100)


def _warm_tokenizers() -> None:
    """Load both BPE rank tables now (tens of ms) so no request pays for it."""
    from _speedups.tokens import ENCODINGS, count_tokens

    for encoding in ENCODINGS:
        count_tokens("warm up", encoding)


def lifespan(
    gw: Gateway, pipeline: Pipeline, *, supervised: bool = False
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app's lifespan over ``gw``'s resources."""

    @asynccontextmanager
    async def run(app: Litestar) -> AsyncIterator[None]:
        async with _resources(gw):
            if supervised:
                _signals(gw, pipeline)
            yield

    return run


def _signals(gw: Gateway, pipeline: Pipeline) -> None:
    """The supervisor's signals to this worker (``gateway/supervisor.py``); SIGTERM and
    SIGINT stay Granian's (its listener closes, connections in flight finish)."""
    from gateway.reload import reload

    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    tasks: set[asyncio.Task[Any]] = set()

    async def reload_once() -> None:
        async with lock:  # one reload at a time, in the order asked
            await reload(gw, pipeline)

    def hup() -> None:
        task = loop.create_task(reload_once())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR1, gw.drain.begin)
    loop.add_signal_handler(signal.SIGUSR2, gw.drain.stop_now)
    loop.add_signal_handler(signal.SIGHUP, hup)


def _settle_heap() -> tuple[int, int, int]:
    """Move everything start-up made (rank tables, Litestar, providers) out of the cyclic
    collector's sight: a full collection then walks only what requests allocate, not
    hundreds of thousands of long-lived objects (each such walk was a tail-latency
    spike of tens of ms). Generation 0 runs less often too: a request allocates a few
    hundred container objects and frees almost all of them by reference counting."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return before


def _unsettle_heap(thresholds: tuple[int, int, int]) -> None:
    """Undo ``_settle_heap`` at shutdown: an app run inside another program (the tests)
    leaves the collector as it found it."""
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@asynccontextmanager
async def _resources(gw: Gateway) -> AsyncIterator[None]:
    await gw.store.start()
    if not gw.store.shared:
        metrics.gateway_state_backend_up.set(1)  # in-process state is up while we are
    await gw.cache.start(gw.store)  # the response cache uses the backend's Redis client
    await gw.conversations.start(gw.store)  # so do stored /v1/responses
    await gw.tenants.start()  # virtual keys' invalidation channel
    await gw.registry.start()
    _warm_tokenizers()
    thresholds = _settle_heap()
    prober = gw.prober = Prober.for_config(gw.router, gw.settings.config, gw.registry.groups)
    settings = gw.settings
    log.info(
        "gateway started",
        extra={
            "fields": {
                "providers": gw.registry.enabled(),
                "aliases": len(gw.registry.groups),
                "state_backend": gw.store.kind,
                "speedups": gw.speedups,
                "config_path": settings.config_path,
                "config_sha256": settings.config_sha256,
                "tracing": settings.tracing.endpoint if settings.tracing else None,
            }
        },
    )
    prober.start()  # active health checks of ejected deployments, until shutdown
    try:
        yield
    finally:
        if gw.prober is not None:
            await gw.prober.aclose()  # the one running now (a reload replaces it)
        await gw.tenants.aclose()  # the ledger's last batch, while the store is open
        await gw.registry.aclose()
        await gw.cache.aclose()
        await gw.store.aclose()
        if gw.tracer is not None:
            await gw.tracer.shutdown()  # flush the spans still queued (bounded)
        metrics.flush()  # the batched writes of the last moments
        _unsettle_heap(thresholds)
