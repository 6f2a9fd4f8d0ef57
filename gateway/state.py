"""``Gateway``: the process's typed handles, built once by ``create_app``.

The pipeline's stages are built from it; the Litestar routes outside the
pipeline (models, health) get it by dependency injection (``gw: Gateway``).
A plain class, not a dataclass: Litestar would try to validate a dataclass it
injects field by field.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.drain import Drain

if TYPE_CHECKING:
    from gateway.pipeline.auth import Keyring
    from gateway.pipeline.cache import ResponseCache
    from gateway.pipeline.conversation import Conversations
    from gateway.pipeline.probes import Prober
    from gateway.pipeline.ratelimit import Limiter
    from gateway.pipeline.routing import Router
    from gateway.providers.registry import Registry
    from gateway.settings import Settings
    from gateway.store.base import StateBackend
    from gateway.telemetry.tracing import Tracer
    from gateway.tenants.tenancy import Tenancy


class Gateway:
    __slots__ = (
        "auth",
        "cache",
        "conversations",
        "drain",
        "limiter",
        "models_cache",
        "prober",
        "registry",
        "router",
        "settings",
        "speedups",
        "started_at",
        "store",
        "tenants",
        "tracer",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        registry: Registry,
        router: Router,
        store: StateBackend,
        speedups: dict[str, str],
        cache: ResponseCache,
        auth: Keyring,
        limiter: Limiter,
        conversations: Conversations,
        tenants: Tenancy,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.router = router
        self.store = store
        self.speedups = speedups
        self.cache = cache
        self.auth = auth
        self.limiter = limiter
        self.conversations = conversations  # /v1/responses state (the backend's, once started)
        self.tenants = tenants  # virtual keys, the cost ledger, sticky sessions
        self.started_at = time.time()
        self.models_cache: dict[str, Any] = {}
        self.prober: Prober | None = None  # active health checks, while the app runs
        self.drain = Drain()  # graceful shutdown: readiness, requests in flight
        self.tracer: Tracer | None = None  # OpenTelemetry, when an OTLP endpoint is set
