"""``create_app(settings)``: wiring only. Granian runs it with ``--factory``."""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State

import _speedups
from gateway.api.chat import chat_completions
from gateway.api.embeddings import embeddings
from gateway.api.handlers import exception_handlers
from gateway.api.health import health, live, ready
from gateway.api.messages import count_tokens, messages
from gateway.api.middleware import ROUTES, gateway_middleware
from gateway.api.models import list_models
from gateway.lifespan import lifespan
from gateway.pipeline.auth import Keyring
from gateway.pipeline.cache import ResponseCache, release_on_error
from gateway.pipeline.ratelimit import Limiter
from gateway.pipeline.routing import Router
from gateway.providers.registry import Registry
from gateway.settings import Settings
from gateway.state import Gateway
from gateway.store.base import StateBackend
from gateway.store.memory import MemoryBackend
from gateway.telemetry import logging as gwlog
from gateway.telemetry.metrics import (
    OVERFLOW_LABEL,
    declare_cache_series,
    declare_http_series,
    declare_series,
    record_speedups,
)


def _store(settings: Settings) -> StateBackend:
    if settings.redis_url:
        from gateway.store.redis import RedisBackend

        timeout = settings.config.limits.redis_timeout_ms / 1000
        return RedisBackend(settings.redis_url, timeout=timeout)
    return MemoryBackend()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    gwlog.configure(settings.log_level)
    speedups = _speedups.implementations()
    record_speedups(speedups)
    registry = Registry(settings)
    # Every series knowable now exists from the first scrape (zeros, not "no data").
    configured = [(d.provider, g.label) for g in registry.groups.values() for d in g.deployments]
    declare_series(configured + [(p, OVERFLOW_LABEL) for p in registry.enabled()])
    declare_http_series(ROUTES)
    declare_cache_series([m.alias for m in settings.config.models if m.cache is not None])
    store = _store(settings)
    gw = Gateway(
        settings=settings,
        registry=registry,
        router=Router(settings.config.routing),
        store=store,
        speedups=speedups,
        cache=ResponseCache(settings),
        auth=Keyring(settings.config),
        limiter=Limiter(settings.config, registry, store),
    )
    app = Litestar(
        route_handlers=[
            chat_completions,
            embeddings,
            list_models,
            messages,
            count_tokens,
            health,
            live,
            ready,
        ],
        exception_handlers=exception_handlers,
        after_exception=[release_on_error],  # a failed cache fill releases its waiters
        lifespan=[lifespan],
        state=State({"gw": gw}),
        debug=False,
        openapi_config=None,
        logging_config=None,
    )
    # Outermost, around Litestar's router: 404/405 answers get a request id, a
    # metric and an access line too (route-level middleware would miss them).
    app.asgi_handler = gateway_middleware(app.asgi_handler)
    return app
