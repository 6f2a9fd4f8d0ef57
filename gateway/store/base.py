"""The state backend Protocol that the pipeline depends on, and the types it speaks.

Backends (``memory.MemoryBackend``, ``redis.RedisBackend``) hold token buckets
(``_speedups.bucket``'s GCRA state) under string keys and change them only in
two atomic operations:

``reserve(buckets, amounts)``
    takes ``amounts[i]`` tokens from every bucket, all or nothing: if any
    bucket cannot give its amount, none is touched. One Lua script call on Redis.
``settle(buckets, reserved, actual)``
    corrects earlier reservations to the real usage: refunds ``reserved - actual``
    or charges ``actual - reserved`` (into debt if need be). One script call.
    ``settle_later`` is the same off the caller's path: at once in-process, as a
    background call on Redis (a lost settle only keeps a reservation as it was,
    which never over-admits).

Both carry, after the buckets, the request's USD budget counters when it has any
(``spend``): ``reserve`` holds the request's maximum cost on each, refused unless
every counter has room (``used + amount <= limit``), in the same all-or-nothing
call as the buckets; ``settle`` replaces each hold by the real cost. Budgets have
no local fallback: the caller fails closed when the backend cannot answer.

A backend also says whether its state is ``shared`` with other processes, gives
the response cache its store (``cache_store``: None keeps the cache in process)
the tenants' store (``tenants``: virtual keys and teams, their invalidation
messages, the cost ledger and sticky sessions) and ``/v1/responses`` its
conversation store (``response_store``). The pipeline talks to a backend
only through these Protocols.

A bucket's key decides where it lives; on Redis Cluster all keys of one call
must share a hash slot (``{tag}``), which the caller (``pipeline/ratelimit.py``)
guarantees. A backend that cannot answer raises ``StateUnavailable`` quickly
(bounded by its timeout) and never blocks; the caller decides the policy for
that request. Whether the backend as a whole counts as down (``healthy``) is the
backend's own call: Redis needs several failures in a row, not one slow call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from gateway.store.cache import CacheStore
    from gateway.store.responses import ResponseStore

__all__ = [
    "Bucket",
    "Budget",
    "Reservation",
    "SpendTake",
    "StateBackend",
    "StateUnavailable",
    "Take",
    "TenantStore",
]


class StateUnavailable(Exception):
    """The shared state did not answer in time or at all. ``reason`` is a metric label:
    ``timeout``, ``error`` (connection refused, reset, cluster down...) or ``down``
    (marked unhealthy by earlier failures; not tried until the probe sees it back)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Bucket(NamedTuple):
    """A token bucket: ``capacity`` tokens, refilled in full every ``period_us``."""

    key: str
    capacity: int
    period_us: int


class Take(NamedTuple):
    """One bucket's answer to a reservation (see ``ratelimit_reserve.lua``)."""

    ok: bool  # this bucket alone could give its amount
    remaining: int  # whole tokens left after the call (before the take on a refusal)
    retry_after_us: int  # 0 if ok; exact wait otherwise; -1 = never (amount > capacity)
    reset_us: int  # until the bucket is full again


class Budget(NamedTuple):
    """A USD budget counter: integer nano-USD used in its period (``tenants/budget.py``)."""

    key: str
    limit: int  # nano-USD the period allows
    expire_at: int  # unix second after which the counter may be dropped (0: never)


class SpendTake(NamedTuple):
    """One budget's answer to a reservation."""

    ok: bool  # this budget alone had room for its amount
    used: int  # nano-USD used after the call (before the hold on a refusal)


class Reservation(NamedTuple):
    allowed: bool
    takes: list[Take]
    spend: Sequence[SpendTake] = ()


class StateBackend(Protocol):
    kind: str
    shared: bool  # other processes see the same state (Redis); False in-process

    @property
    def healthy(self) -> bool:
        """False while the backend is known to be failing (memory: always True)."""
        ...

    async def start(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers; drives /health/ready."""
        ...

    async def aclose(self) -> None: ...

    async def reserve(
        self,
        buckets: Sequence[Bucket],
        amounts: Sequence[int],
        *,
        spend: Sequence[tuple[Budget, int]] = (),
        now_us: int | None = None,
    ) -> Reservation:
        """All-or-nothing take of the buckets and of each ``(budget, nano-USD)`` hold.
        ``now_us`` pins the clock (tests only)."""
        ...

    async def settle(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        *,
        spend: Sequence[tuple[Budget, int, int]] = (),
        now_us: int | None = None,
    ) -> list[int]:
        """Correct reservations, and each ``(budget, held, cost)`` to the real cost;
        returns each bucket's remaining tokens."""
        ...

    def settle_later(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        spend: Sequence[tuple[Budget, int, int]] = (),
    ) -> None:
        """``settle`` off the caller's path; failures are dropped (never over-admit: a
        lost budget settle keeps the request's maximum cost held until the period ends)."""
        ...

    def cache_store(self, timeout_s: float) -> CacheStore | None:
        """The response cache's store on this backend (None: the cache keeps its own)."""
        ...

    def response_store(self, timeout_s: float) -> ResponseStore:
        """Where ``/v1/responses`` keeps conversations (after ``start``)."""
        ...

    def tenants(self) -> TenantStore:
        """Virtual keys, teams, the ledger and sessions on this backend (one per backend)."""
        ...


class TenantStore(Protocol):
    """Records are opaque JSON bytes (``gateway/tenants/records.py`` writes them). A
    key's record is stored under its id and, while it is usable, also under its
    digest (one read on the auth path). Every call may raise ``StateUnavailable``."""

    @property
    def subscribed(self) -> bool:
        """Invalidation messages are arriving (False: a reader must not trust its cache
        for long)."""
        ...

    async def start(self, on_message: Callable[[str | None], None]) -> None:
        """Deliver every invalidation message to ``on_message``; ``None`` means "messages
        may have been lost": drop everything cached."""
        ...

    async def aclose(self) -> None: ...

    async def publish(self, message: str) -> None: ...

    async def by_digest(self, digest: str) -> bytes | None: ...

    async def get(self, kind: str, ident: str) -> bytes | None:
        """A ``key`` or ``team`` record by id."""
        ...

    async def all(self, kind: str) -> list[bytes]: ...

    async def put(
        self,
        kind: str,
        ident: str,
        record: bytes | None,
        *,
        digest: str | None = None,
        drop_digest: str | None = None,
    ) -> None:
        """Write (``record``) or delete (None) a record, atomically with its digest entry
        (``digest``: stored there too; ``drop_digest``: that entry removed)."""
        ...

    async def budget_used(self, keys: Sequence[str]) -> list[int]:
        """The current nano-USD of budget counters (missing: 0), for reports."""
        ...

    async def ledger_add(self, deltas: Mapping[str, Mapping[str, int]], ttl_s: int) -> None:
        """``HINCRBY`` every field of every hash, one atomic call; hashes expire after
        ``ttl_s``."""
        ...

    async def ledger_read(self, keys: Sequence[str]) -> list[dict[str, int]]: ...

    async def session_get(self, key: str, ttl_s: int) -> str | None:
        """A sticky session's deployment, its expiry pushed back to ``ttl_s``."""
        ...

    async def session_set(self, key: str, value: str, ttl_s: int) -> None: ...
