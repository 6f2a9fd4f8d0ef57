"""``Tenancy``: the process's handles for virtual keys, the ledger and sticky sessions,
built once by ``create_app`` beside the limiter and the cache.

Virtual keys (``directory``) exist when ``GATEWAY_MASTER_KEY`` is set: the admin
API issues them, and the gateway is then closed to unknown keys. ``GATEWAY_ADMIN=off``
hides the ``/admin`` routes of this replica (keys made through another replica
still work here). The ledger records spend when the admin API that reports it
exists (a master key); every answer's own cost header and sessions work in every
mode.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.tenants.directory import Directory
from gateway.tenants.ledger import Ledger
from gateway.tenants.sessions import Sessions

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext
    from gateway.providers.base import Deployment
    from gateway.providers.registry import Registry
    from gateway.settings import Settings
    from gateway.store.base import StateBackend
    from gateway.tenants.ledger import Charge

__all__ = ["Tenancy"]

log = logging.getLogger("gateway")
OPEN = "open"  # the ledger's key for every caller of an open gateway (no keys at all)


class Tenancy:
    def __init__(self, settings: Settings, registry: Registry, store: StateBackend) -> None:
        tstore = self.store = store.tenants()
        config = settings.config
        self.settings = settings
        self.enabled = settings.master_key is not None
        self.admin = self.enabled and settings.admin_api
        self.closed = self.enabled or bool(config.keys)
        pepper = settings.key_pepper.reveal().encode() if settings.key_pepper else None
        self.peppered = pepper is not None
        self.directory = (
            Directory(tstore, pepper, config.limits.default_key) if self.enabled else None
        )
        self.ledger = Ledger(tstore)
        self.sessions = Sessions(tstore, config.routing.sessions, registry.groups)

    async def start(self) -> None:
        if self.directory is not None:
            if not self.peppered:
                log.warning(
                    "GATEWAY_KEY_PEPPER is not set: virtual keys are digested without a "
                    "secret pepper (see the README, Virtual keys)"
                )
            await self.directory.start()

    async def aclose(self) -> None:
        await self.ledger.aclose()

    def charged(self, ctx: RequestContext, dep: Deployment, charge: Charge) -> None:
        """An answer's cost is known: its header, the ledger, the budget holds."""
        ctx.cost = charge
        p = ctx.principal
        if self.enabled:  # nothing would ever read it otherwise (no /admin/spend)
            key = p.tenant if p is not None and self.closed else OPEN
            team = p.team if p is not None else None
            self.ledger.add(key, team, ctx.label or dep.label, charge, time.time())
        lease = ctx.lease
        if lease is not None and charge.priced:
            lease.cost = charge.total
