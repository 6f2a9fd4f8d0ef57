"""In-process state: the default when REDIS_URL is unset (one process, same semantics).

The same GCRA math as the Lua scripts (``_speedups.bucket``, the kernel the
scripts are tested against), on a dict of ``key -> (tat_us, tat_frac)``. An
operation runs without awaiting, so it is atomic within the event loop. The
clock is monotonic (a wall-clock step would mint tokens). It also serves as
the local fallback limiter while Redis is unreachable.

Keys whose bucket is full again are dropped by a sweep every ``SWEEP_EVERY``
writes, so open-mode tenants (one per presented key) cannot grow it forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from _speedups import bucket as gcra
from gateway.store.base import Bucket, Budget, Reservation, SpendTake, Take
from gateway.store.responses import MemoryResponseStore
from gateway.store.tenants import MemoryTenantStore

SWEEP_EVERY = 10_000


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class MemoryBackend:
    kind = "memory"
    shared = False

    def __init__(self, clock: Callable[[], int] = _monotonic_us) -> None:
        self._clock = clock
        self._state: dict[str, tuple[int, int]] = {}
        self._writes = 0
        self._responses: MemoryResponseStore | None = None
        self._tenants: MemoryTenantStore | None = None

    @property
    def healthy(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._state)

    def reserve_now(
        self,
        buckets: Sequence[Bucket],
        amounts: Sequence[int],
        now_us: int | None = None,
        spend: Sequence[tuple[Budget, int]] = (),
    ) -> Reservation:
        """``reserve`` without the coroutine (the fallback path calls it directly)."""
        now = self._clock() if now_us is None else now_us
        state = self._state
        results = []
        allowed = True
        spent: list[SpendTake] = []
        if spend:
            budgets = self.tenants().budgets
            holds = [(b, n, budgets.used(b.key)) for b, n in spend]
            spent = [SpendTake(n <= b.limit and used <= b.limit - n, used) for b, n, used in holds]
            allowed = all(t.ok for t in spent)
        for b, n in zip(buckets, amounts, strict=True):
            old = state.get(b.key, gcra.FULL_STATE)
            ok, new, remaining, retry, reset = gcra.take(old, now, b.capacity, b.period_us, n)
            results.append((ok, new, remaining, retry, reset))
            allowed = allowed and ok
        takes = []
        for b, (ok, new, remaining, retry, reset) in zip(buckets, results, strict=True):
            if allowed:
                state[b.key] = new
                takes.append(Take(True, remaining, 0, reset))
            elif ok:  # could have given its share, but nothing is taken: report it as it is
                _, _, before, _, reset_before = gcra.take(
                    state.get(b.key, gcra.FULL_STATE), now, b.capacity, b.period_us, 0
                )
                takes.append(Take(True, before, 0, reset_before))
            else:
                takes.append(Take(False, remaining, retry, reset))
        if allowed:
            self._wrote(now, len(buckets))
            if spend:
                for budget, n, used in holds:
                    budgets.put(budget.key, used + n, budget.expire_at)
                spent = [SpendTake(True, used + n) for _, n, used in holds]
        return Reservation(allowed, takes, spent)

    def take_available(self, buckets: Sequence[Bucket], amounts: Sequence[int]) -> None:
        """Take each amount from each bucket where it is available, each on its own
        (never all or nothing, never into debt). The fallback limiter's shadow: it
        mirrors what this process admitted through Redis, so an outage starts from
        this process's recent use instead of a full burst."""
        now = self._clock()
        state = self._state
        for b, n in zip(buckets, amounts, strict=True):
            ok, new, _, _, _ = gcra.take(
                state.get(b.key, gcra.FULL_STATE), now, b.capacity, b.period_us, n
            )
            if ok:
                state[b.key] = new
        self._wrote(now, len(buckets))

    def settle_now(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        now_us: int | None = None,
        spend: Sequence[tuple[Budget, int, int]] = (),
    ) -> list[int]:
        now = self._clock() if now_us is None else now_us
        state = self._state
        new_states = [
            gcra.settle(state.get(b.key, gcra.FULL_STATE), now, b.capacity, b.period_us, res, act)
            for b, res, act in zip(buckets, reserved, actual, strict=True)
        ]  # computed first: an error leaves every bucket as it was
        for b, (new, _) in zip(buckets, new_states, strict=True):
            state[b.key] = new
        self._wrote(now, len(buckets))
        if spend:
            budgets = self.tenants().budgets
            for budget, held, cost in spend:
                budgets.put(
                    budget.key, max(0, budgets.used(budget.key) - held) + cost, budget.expire_at
                )
        return [remaining for _, remaining in new_states]

    async def reserve(
        self,
        buckets: Sequence[Bucket],
        amounts: Sequence[int],
        *,
        spend: Sequence[tuple[Budget, int]] = (),
        now_us: int | None = None,
    ) -> Reservation:
        return self.reserve_now(buckets, amounts, now_us, spend)

    async def settle(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        *,
        spend: Sequence[tuple[Budget, int, int]] = (),
        now_us: int | None = None,
    ) -> list[int]:
        return self.settle_now(buckets, reserved, actual, now_us, spend)

    def settle_later(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        spend: Sequence[tuple[Budget, int, int]] = (),
    ) -> None:
        self.settle_now(buckets, reserved, actual, spend=spend)  # no I/O: now is as cheap

    def cache_store(self, timeout_s: float) -> None:
        return None  # the response cache keeps its own in-process store

    def response_store(self, timeout_s: float) -> MemoryResponseStore:
        if self._responses is None:
            self._responses = MemoryResponseStore()
        return self._responses

    def tenants(self) -> MemoryTenantStore:
        if self._tenants is None:
            self._tenants = MemoryTenantStore()
        return self._tenants

    def _wrote(self, now: int, count: int) -> None:
        self._writes += count
        if self._writes >= SWEEP_EVERY:
            self._writes = 0
            # A bucket whose TAT has passed is full: the same as no key at all.
            self._state = {k: v for k, v in self._state.items() if v[0] > now}
