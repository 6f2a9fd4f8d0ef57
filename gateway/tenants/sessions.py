"""Sticky sessions: a conversation stays on the deployment that served it before, so the
provider's prompt cache keeps hitting.

The session id is the ``x-session-id`` header, else the first configured body
field that holds a string (``routing.sessions.body_fields``: ``user``,
``metadata.<name>``); at most 256 bytes (a longer one is ignored). It is never
stored as sent: the store's key is a SHA-256 of (tenant, alias, id), so one
tenant cannot steer another's sessions, and its value is the deployment's
position in its alias (``<alias>#<i>``). Stored with a TTL (``ttl``, default
3600 s, pushed back by every request that reads it: ``GETEX``) and shared by
every replica through the state backend.

Stage ``route`` reads it (one short call; a failure only loses the affinity) and
moves that deployment to the front of the plan when it is in the plan and usable
(breaker closed, no Retry-After pending). Stage ``settle`` compares it with the
deployment that served: the same is a ``hit``; another (it was ejected, cooling
down after a 429, refused by its own limits, or failed) is a ``moved`` and the
session follows it; none stored is ``new``. Counted in
``llm_session_affinity_total{model, result}``. Only aliases with two or more
deployments have sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

from gateway.store.base import StateUnavailable
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from gateway.config import SessionOptions
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.routing import Router
    from gateway.providers.base import Deployment
    from gateway.providers.registry import ModelGroup
    from gateway.store.base import TenantStore

__all__ = ["Sessions"]

MAX_ID_BYTES = 256
HEADER = b"x-session-id"


class Sessions:
    def __init__(
        self, store: TenantStore, options: SessionOptions, groups: dict[str, ModelGroup]
    ) -> None:
        self.store = store
        self.ttl = options.ttl
        self.fields = [tuple(f.split(".", 1)) for f in options.body_fields]
        self._ident: dict[int, str] = {}
        for g in groups.values():
            for i, d in enumerate(g.deployments):
                self._ident[id(d)] = f"{g.name}#{i}"
        self._tasks: set[asyncio.Task[Any]] = set()

    def session_id(self, ctx: RequestContext) -> str | None:
        scope = ctx.scope
        if scope is not None:
            for k, v in scope["headers"]:
                if k == HEADER:
                    return v.decode("latin-1") if 0 < len(v) <= MAX_ID_BYTES else None
        for field in self.fields:
            value: Any = ctx.body.get(field[0])
            if len(field) == 2:
                value = value.get(field[1]) if isinstance(value, dict) else None
            if isinstance(value, str) and 0 < len(value.encode()) <= MAX_ID_BYTES:
                return value
        return None

    def wanted(self, ctx: RequestContext) -> str | None:
        """The session id of a request that ``place`` has work for (None: nothing to do,
        no I/O: sessions off, or no id)."""
        if not self.ttl or ctx.group is None or ctx.principal is None:
            return None
        return self.session_id(ctx)

    async def place(self, ctx: RequestContext, router: Router, sid: str) -> None:
        """Stage ``route`` (for a ``wanted`` id): the session's deployment first, when it
        can serve now."""
        plan, group, principal = ctx.plan, ctx.group, ctx.principal
        if len(plan) < 2 or group is None or principal is None:
            return
        raw = f"{principal.tenant}\0{group.name}\0{sid}".encode("utf-8", "surrogatepass")
        key = "gw:sess:" + hashlib.sha256(raw).hexdigest()[:32]
        try:
            stored = await self.store.session_get(key, self.ttl)
        except StateUnavailable:
            return
        ctx.session = (key, stored)
        if stored is None:
            return
        for i, dep in enumerate(plan):
            if self._ident.get(id(dep)) == stored:
                if i and router.usable(dep):
                    plan.insert(0, plan.pop(i))
                    ctx.dep = dep
                    ctx.provider = dep.provider
                break

    def served(self, ctx: RequestContext, dep: Deployment) -> None:
        """Stage ``settle``: count the outcome; the session follows where it was served."""
        session = ctx.session
        if session is None:
            return
        key, stored = session
        ident = self._ident.get(id(dep))
        group = ctx.group
        label = group.label if group is not None else dep.label
        if ident is None:
            return
        if ident == stored:
            metrics.llm_session_affinity_total.labels(label, "hit").inc()
            return
        metrics.llm_session_affinity_total.labels(label, "new" if stored is None else "moved").inc()
        task = asyncio.get_running_loop().create_task(self._set(key, ident))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set(self, key: str, ident: str) -> None:
        try:
            await self.store.session_set(key, ident, self.ttl)
        except StateUnavailable:
            pass  # the next request of the session sets it again
