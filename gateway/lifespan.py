"""Resources owned by the app's lifetime: upstream transports, the state backend."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar

from gateway.pipeline.probes import Prober
from gateway.state import Gateway
from gateway.telemetry import metrics

log = logging.getLogger("gateway")
# Generation 0 every ~10,000 net container allocations (a few dozen requests) instead
# of 700 (every request or two); older generations as rarely, relative to it.
GC_THRESHOLDS = (10_000, 50, 100)


def _warm_tokenizers() -> None:
    """Load both BPE rank tables now (tens of ms) so no request pays for it."""
    from _speedups.tokens import ENCODINGS, count_tokens

    for encoding in ENCODINGS:
        count_tokens("warm up", encoding)


def lifespan(gw: Gateway) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app's lifespan over ``gw``'s resources."""

    @asynccontextmanager
    async def run(app: Litestar) -> AsyncIterator[None]:
        async with _resources(gw):
            yield

    return run


def _settle_heap() -> None:
    """Move everything start-up made (rank tables, Litestar, providers) out of the cyclic
    collector's sight: a full collection then walks only what requests allocate, not
    hundreds of thousands of long-lived objects (each such walk was a tail-latency
    spike of tens of ms). Generation 0 runs less often too: a request allocates a few
    hundred container objects and frees almost all of them by reference counting."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@asynccontextmanager
async def _resources(gw: Gateway) -> AsyncIterator[None]:
    await gw.store.start()
    if not gw.store.shared:
        metrics.gateway_state_backend_up.set(1)  # in-process state is up while we are
    await gw.cache.start(gw.store)  # the response cache uses the backend's Redis client
    await gw.tenants.start()  # virtual keys' invalidation channel
    await gw.registry.start()
    _warm_tokenizers()
    _settle_heap()
    prober = gw.prober = Prober.for_config(gw.router, gw.settings.config, gw.registry.groups)
    log.info(
        "gateway started",
        extra={
            "fields": {
                "providers": gw.registry.enabled(),
                "aliases": len(gw.registry.groups),
                "state_backend": gw.store.kind,
                "speedups": gw.speedups,
            }
        },
    )
    prober.start()  # active health checks of ejected deployments, until shutdown
    try:
        yield
    finally:
        await prober.aclose()
        await gw.tenants.aclose()  # the ledger's last batch, while the store is open
        await gw.registry.aclose()
        await gw.cache.aclose()
        await gw.store.aclose()
