"""Typed handles that the lifespan puts on ``app.state``; controllers read them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.pipeline.auth import Keyring
    from gateway.pipeline.cache import ResponseCache
    from gateway.pipeline.ratelimit import Limiter
    from gateway.pipeline.routing import Router
    from gateway.providers.registry import Registry
    from gateway.settings import Settings
    from gateway.store.base import StateBackend


@dataclass(eq=False)
class Gateway:
    settings: Settings
    registry: Registry
    router: Router
    store: StateBackend
    speedups: dict[str, str]
    cache: ResponseCache
    auth: Keyring
    limiter: Limiter
    started_at: float = field(default_factory=time.time)
    models_cache: dict[str, Any] = field(default_factory=dict)
