"""Resources owned by the app's lifetime: upstream transports, the state backend."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from gateway.pipeline.probes import Prober
from gateway.state import Gateway
from gateway.telemetry import metrics

log = logging.getLogger("gateway")


def _warm_tokenizers() -> None:
    """Load both BPE rank tables now (tens of ms) so no request pays for it."""
    from _speedups.tokens import ENCODINGS, count_tokens

    for encoding in ENCODINGS:
        count_tokens("warm up", encoding)


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    gw: Gateway = app.state.gw
    await gw.store.start()
    if gw.store.kind == "memory":
        metrics.gateway_state_backend_up.set(1)  # in-process state is up while we are
    await gw.cache.start(gw.store)  # the response cache uses the backend's Redis client
    await gw.registry.start()
    _warm_tokenizers()
    prober = app.state.probes = Prober.for_config(gw.router, gw.settings.config, gw.registry.groups)
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
        await gw.registry.aclose()
        await gw.cache.aclose()
        await gw.limiter.aclose()  # pending settles, before the backend closes
        await gw.store.aclose()
