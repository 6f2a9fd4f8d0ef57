"""``create_app(settings)``: wiring only. Granian runs it with ``--factory``.

It builds the process's handles (``Gateway``), the one pipeline (core stages plus
the config's plugins) and its endpoints, a Litestar app for the other routes
(models, health: they get the ``Gateway`` by dependency injection), and returns
the edge (``api/middleware.Edge``), which dispatches the pipeline endpoints itself
and everything else to Litestar.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide

import _speedups
from gateway.api.admin import admin_routes
from gateway.api.chat import CHAT
from gateway.api.embeddings import EMBEDDINGS
from gateway.api.handlers import exception_handlers
from gateway.api.health import health, live, ready
from gateway.api.messages import COUNT_TOKENS, MESSAGES
from gateway.api.middleware import ROUTES, Edge
from gateway.api.models import list_models
from gateway.api.responses import RESPONSES_ENDPOINT, delete_response, retrieve_response
from gateway.api.routes import EndpointApp
from gateway.lifespan import lifespan
from gateway.pipeline import attempts, auth, cache, conversation, parse, ratelimit, route, settle
from gateway.pipeline.routing import Router
from gateway.pipeline.run import Pipeline, Stage, insert
from gateway.plugins.base import load_all
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
    declare_tenant_series,
    record_speedups,
)
from gateway.tenants.tenancy import Tenancy

ENDPOINTS = (CHAT, EMBEDDINGS, MESSAGES, COUNT_TOKENS, RESPONSES_ENDPOINT)


def _store(settings: Settings) -> StateBackend:
    if settings.redis_url:
        from gateway.store.redis import RedisBackend

        timeout = settings.config.limits.redis_timeout_ms / 1000
        return RedisBackend(settings.redis_url, timeout=timeout)
    return MemoryBackend()


def build_gateway(settings: Settings, router: Router | None = None) -> Gateway:
    """The process's handles (tests pass their own ``router``, with a seeded RNG)."""
    registry = Registry(settings)
    store = _store(settings)
    tenants = Tenancy(settings, registry, store)
    return Gateway(
        settings=settings,
        registry=registry,
        router=router or Router(settings.config.routing),
        store=store,
        speedups=_speedups.implementations(),
        cache=cache.ResponseCache(settings),
        auth=auth.Keyring(settings.config, tenants.directory, tenants.closed),
        limiter=ratelimit.Limiter(settings.config, registry, store),
        conversations=conversation.Conversations(
            settings.config.responses, settings.config.limits.redis_timeout_ms / 1000
        ),
        tenants=tenants,
    )


def build_pipeline(gw: Gateway) -> Pipeline:
    plugins: list[tuple[str, Stage]] = list(load_all(gw.settings.config.plugins))
    routes = route.Route(gw.router, gw.registry.groups, gw.tenants.sessions)
    limit = ratelimit.Limit(gw.limiter, keys=gw.tenants.closed)
    # The cache stage may route early and send the reservation with its lookup (one
    # round trip) when nothing could watch the stages between it and limit run.
    between = {"after_cache", "before_route", "after_route", "before_limit"}
    early = None if any(at in between for at, _ in plugins) else (routes, limit)
    core: list[Stage] = [
        parse.Parse(gw.settings),
        auth.Auth(gw.auth, gw.registry),
        conversation.Recall(gw.conversations),  # /v1/responses only
        cache.CacheStage(gw.cache, early),
        routes,
        limit,
        attempts.Attempts(gw),
        settle.Settle(gw.tenants),
        conversation.Remember(gw.conversations),  # /v1/responses only
        settle.Respond(),
    ]
    return Pipeline(insert(core, plugins), tracer=gw.tracer)


def declare_all(gw: Gateway) -> None:
    """Every series knowable now exists from the first scrape (zeros, not "no data")."""
    registry = gw.registry
    configured = [(d.provider, g.label) for g in registry.groups.values() for d in g.deployments]
    declare_series(configured + [(p, OVERFLOW_LABEL) for p in registry.enabled()])
    declare_http_series(ROUTES)
    declare_cache_series([m.alias for m in gw.settings.config.models if m.cache is not None])

    multi = [m.alias for m in gw.settings.config.models if len(m.deployments) > 1]
    declare_tenant_series(multi, gw.tenants.enabled)


def create_app(
    settings: Settings | None = None, *, router: Router | None = None, supervised: bool = False
) -> Edge:
    """``supervised``: a worker of ``llm-gateway serve``, which drives drain and reload by
    signals (``gateway/supervisor.py``); the lifespan then installs their handlers."""
    settings = settings or Settings.from_env()
    access = gwlog.configure(settings.log_level)
    gw = build_gateway(settings, router)
    if settings.tracing is not None:  # the SDK is imported only then
        from gateway.telemetry.tracing import Tracer

        gw.tracer = Tracer(settings.tracing)
    record_speedups(gw.speedups)
    declare_all(gw)
    pipeline = build_pipeline(gw)
    app = Litestar(
        route_handlers=[
            list_models,
            retrieve_response,
            delete_response,
            health,
            live,
            ready,
            *(admin_routes(gw) if gw.tenants.admin else ()),
        ],
        dependencies={"gw": Provide(lambda: gw, use_cache=True, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        lifespan=[lifespan(gw, pipeline, supervised=supervised)],
        debug=False,
        openapi_config=None,
        logging_config=None,
    )
    endpoints = {e.path: EndpointApp(e, pipeline) for e in ENDPOINTS}
    return Edge(app, gw, access, endpoints)
