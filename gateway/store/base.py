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

A backend also says whether its state is ``shared`` with other processes, gives
the response cache its store (``cache_store``: None keeps the cache in process)
and ``/v1/responses`` its conversation store (``response_store``). The pipeline
talks to a backend only through this Protocol.

A bucket's key decides where it lives; on Redis Cluster all keys of one call
must share a hash slot (``{tag}``), which the caller (``pipeline/ratelimit.py``)
guarantees. A backend that cannot answer raises ``StateUnavailable`` quickly
(bounded by its timeout) and never blocks; the caller decides the policy for
that request. Whether the backend as a whole counts as down (``healthy``) is the
backend's own call: Redis needs several failures in a row, not one slow call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from gateway.store.cache import CacheStore
    from gateway.store.responses import ResponseStore

__all__ = ["Bucket", "Reservation", "StateBackend", "StateUnavailable", "Take"]


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


class Reservation(NamedTuple):
    allowed: bool
    takes: list[Take]


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
        self, buckets: Sequence[Bucket], amounts: Sequence[int], *, now_us: int | None = None
    ) -> Reservation:
        """All-or-nothing take. ``now_us`` pins the clock (tests only)."""
        ...

    async def settle(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        *,
        now_us: int | None = None,
    ) -> list[int]:
        """Correct reservations; returns each bucket's remaining tokens."""
        ...

    def settle_later(
        self, buckets: Sequence[Bucket], reserved: Sequence[int], actual: Sequence[int]
    ) -> None:
        """``settle`` off the caller's path; failures are dropped (never over-admit)."""
        ...

    def cache_store(self, timeout_s: float) -> CacheStore | None:
        """The response cache's store on this backend (None: the cache keeps its own)."""
        ...

    def response_store(self, timeout_s: float) -> ResponseStore:
        """Where ``/v1/responses`` keeps conversations (after ``start``)."""
        ...
