"""Reloading the config file and the secrets in place, in one worker.

The supervisor (``gateway/supervisor.py``) checks a new config first and sends
SIGHUP to each worker only when it is good; the worker reads the environment and
the files again itself (``Settings.from_env``) and, should that fail after all (a
file changed again in between), logs the error and keeps what it runs.

Rebuilt from the new settings: the registry (deployments and their precomputed
request headers, so a rotated provider key is sent from the next request on;
upstream connection pools are kept, one per provider and base URL), the keyring
(virtual keys), the limiter (limits), the router (breakers and latency averages
start afresh), the response cache's TTLs, the health prober, and the pipeline's
stage list, plugins included. Kept: the state backend and its buckets, the
response cache's entries and fills in flight, the listener, the drain.

Nothing is torn down under a request: one that is running keeps the stage tuple,
group, deployments and lease it started with (``Pipeline.run`` reads
``self.stages`` once), and finishes as it began; the next request sees the new
config. Every swap is a plain attribute assignment on the event loop's thread.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from gateway.config import ConfigError
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.pipeline.run import Pipeline
    from gateway.state import Gateway

__all__ = ["apply", "reload"]

log = logging.getLogger("gateway.reload")


async def reload(gw: Gateway, pipeline: Pipeline) -> bool:
    """Re-read the environment and files; apply them, or keep the running config."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error(
            "config reload refused in worker: the running config stays",
            extra={"fields": {"error": str(exc), "pid": os.getpid()}},
        )
        return False
    await apply(gw, pipeline, settings)
    log.debug(
        "config applied",
        extra={"fields": {"config_sha256": settings.config_sha256, "pid": os.getpid()}},
    )
    return True


async def apply(gw: Gateway, pipeline: Pipeline, settings: Settings) -> None:
    from gateway.app import build_pipeline, declare_all
    from gateway.pipeline.auth import Keyring
    from gateway.pipeline.cache import ResponseCache
    from gateway.pipeline.probes import Prober
    from gateway.pipeline.ratelimit import Limiter
    from gateway.pipeline.routing import Router
    from gateway.providers.registry import Registry

    registry = Registry(settings, transports=gw.registry.transports)
    await registry.start()  # pools of new upstreams; the others are shared, already open
    router = Router(settings.config.routing, clock=gw.router.clock)
    fresh = ResponseCache(settings)  # only its TTLs and timeout: entries and fills stay
    prober = Prober.for_config(router, settings.config, registry.groups)
    old_prober = gw.prober

    gw.settings = settings
    gw.registry = registry
    gw.router = router
    gw.auth = Keyring(settings.config, gw.tenants.directory, gw.tenants.closed)
    gw.limiter = Limiter(settings.config, registry, gw.store)
    gw.cache.ttl_s = fresh.ttl_s
    gw.cache.timeout_s = fresh.timeout_s
    gw.models_cache.clear()
    gw.prober = prober
    pipeline.replace(build_pipeline(gw))
    declare_all(gw)

    if old_prober is not None:
        await old_prober.aclose()
    prober.start()
