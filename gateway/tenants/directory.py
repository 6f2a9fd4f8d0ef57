"""The auth stage's half of virtual keys: a presented secret -> its ``Principal``.

A lookup digests the secret (HMAC with the pepper), then reads a local cache;
on a miss, one read of the digest's entry from the store (and of its team, cached
apart). Entries live ``FRESH_S`` (30 s) while the store's invalidation channel is
subscribed: every change made through the admin API publishes the key's digest
(or the team), and every process drops what it cached, so a revoke or an update
takes effect everywhere within the channel's delay (milliseconds). While the
channel is down, entries live ``DEGRADED_S`` (1 s) instead, so a change still
takes effect within a second. A lookup that started before an invalidation
arrived is not cached (the generation check), and concurrent lookups of one
digest share one read.

When the store does not answer, a principal seen in the last ``STALE_S`` (5 min)
keeps working (a Redis blip must not log every client out); an unknown digest
gets a 503 with Retry-After, never a 401 that would tell a valid key it is wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.errors import ServiceUnavailable
from gateway.pipeline.auth import BudgetLimit, Principal, merge_limits
from gateway.store.base import StateUnavailable
from gateway.tenants.records import KeyRecord, TeamRecord, decode_key, decode_team, digest
from gateway.tenants.records import to_nano as nano

if TYPE_CHECKING:
    from gateway.config import Limits
    from gateway.store.base import TenantStore

__all__ = ["Directory", "principal_of"]

FRESH_S = 30.0
DEGRADED_S = 1.0
STALE_S = 300.0
_MAX_ENTRIES = 100_000


def _intersect(a: list[str] | None, b: list[str] | None) -> frozenset[str] | None:
    if a is None and b is None:
        return None
    if a is None or b is None:
        return frozenset(a if a is not None else b or ())
    return frozenset(a) & frozenset(b)


def principal_of(key: KeyRecord, team: TeamRecord | None, default: Limits | None) -> Principal:
    """A key's record (and its team's) as what the pipeline enforces."""
    budgets: list[BudgetLimit] = []
    if key.budget is not None:
        budgets.append(BudgetLimit("key", key.id, nano(key.budget.usd), key.budget.period))
    if team is not None and team.budget is not None:
        budgets.append(BudgetLimit("team", team.id, nano(team.budget.usd), team.budget.period))
    return Principal(
        tenant=key.id,
        name=key.name,
        limits=merge_limits(default, key.limits),
        models=_intersect(key.models, team.models if team else None),
        team=key.team,
        team_limits=team.limits if team is not None else None,
        budgets=tuple(budgets),
        regions=_intersect(key.regions, team.regions if team else None),
        expires_at=key.expires_at,
        rev=f"{key.rev}.{team.rev if team else 0}",
    )


class _Entry:
    __slots__ = ("fresh_until", "principal", "seen")

    def __init__(self, principal: Principal | None, fresh_until: float, seen: float) -> None:
        self.principal = principal
        self.fresh_until = fresh_until
        self.seen = seen


class Directory:
    """Virtual keys by digest, cached per process (see the module docstring)."""

    def __init__(
        self,
        store: TenantStore,
        pepper: bytes | None,
        default_limits: Limits | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.pepper = pepper
        self.default_limits = default_limits
        self.clock = clock
        self._keys: dict[str, _Entry] = {}
        self._teams: dict[str, tuple[TeamRecord | None, float]] = {}
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}
        self._generation = 0

    async def start(self) -> None:
        await self.store.start(self.invalidate)

    def digest(self, secret: str) -> str:
        return digest(self.pepper, secret)

    def invalidate(self, message: str | None) -> None:
        """An invalidation message: ``k:<digest>`` drops that key, anything else (a team,
        or None: messages may have been lost) drops everything."""
        self._generation += 1
        if message is not None and message.startswith("k:"):
            self._keys.pop(message[2:], None)
            return
        self._keys.clear()
        self._teams.clear()

    def _ttl(self, found: bool) -> float:
        ttl = FRESH_S if self.store.subscribed else DEGRADED_S
        return ttl if found else min(ttl, 5.0)

    async def lookup(self, secret: str) -> Principal | None:
        """The key's principal, None for an unknown (or revoked) key; 503 when the store
        cannot answer for a key not seen lately."""
        d = self.digest(secret)
        now = self.clock()
        entry = self._keys.get(d)
        if entry is not None and entry.fresh_until > now:
            return entry.principal
        pending = self._pending.get(d)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[d] = future
        try:
            principal = await self._read(d, entry, now)
            future.set_result(principal)
            return principal
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        finally:
            del self._pending[d]

    async def _read(self, d: str, entry: _Entry | None, now: float) -> Principal | None:
        generation = self._generation
        try:
            raw = await self.store.by_digest(d)
            principal = None
            if raw is not None:
                key = decode_key(raw)
                team = await self._team(key.team) if key.team else None
                principal = principal_of(key, team, self.default_limits)
        except StateUnavailable:
            if entry is not None and now - entry.seen < STALE_S:
                return entry.principal
            raise ServiceUnavailable(
                "API keys cannot be checked right now; try again shortly.",
                code="key_store_unavailable",
                headers={"retry-after": "1"},
            ) from None
        if generation == self._generation:  # no invalidation meanwhile: safe to keep
            if len(self._keys) >= _MAX_ENTRIES:
                self._keys.clear()
            now = self.clock()
            self._keys[d] = _Entry(principal, now + self._ttl(principal is not None), now)
        return principal

    async def _team(self, ident: str) -> TeamRecord | None:
        now = self.clock()
        cached = self._teams.get(ident)
        if cached is not None and cached[1] > now:
            return cached[0]
        generation = self._generation
        raw = await self.store.get("team", ident)
        team = decode_team(raw) if raw is not None else None
        if generation == self._generation:
            if len(self._teams) >= 10_000:
                self._teams.clear()
            self._teams[ident] = (team, now + self._ttl(True))
        return team

    def snapshot(self) -> dict[str, Any]:
        return {"cached_keys": len(self._keys), "subscribed": self.store.subscribed}
