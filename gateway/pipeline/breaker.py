"""Per-deployment circuit breakers (outlier detection, after Envoy's).

A breaker is **closed** while its deployment serves. It **opens** (the deployment
is ejected: the router stops sending it traffic) after ``consecutive_failures``
failures in a row, or when at least ``min_requests`` outcomes in the last
``window`` seconds include an ``error_rate`` share of failures. The ejection lasts
``ejection`` seconds, doubled for each repeat ejection (capped at ``max_ejection``;
the count is forgotten after ``max_ejection`` seconds without one). When it ends
the breaker is **half-open**: up to ``half_open_probes`` requests go through; the
first success closes it, a failure opens it again for longer. An active health
check that passes (``pipeline/probes.py``) ends an ejection early: the breaker is
half-open at once, so one real request confirms the recovery within seconds
rather than after the rest of a doubled ejection.

A breaker never opens when that would leave its group with no closed breaker:
the last healthy deployment keeps serving (and failing fast) rather than nothing.
Outcomes are *success*, *failure* (5xx, 429, timeouts, connection and protocol
errors, the upstream refusing the gateway's own key) or *neutral* (a client's
4xx, a cancelled attempt): neutral outcomes never count.

All of this is process-local and single-threaded (asyncio): no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.config import BreakerOptions

CLOSED, HALF_OPEN, OPEN = 0, 1, 2  # the metric's values: higher is worse
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}
_BUCKETS = 10


class Breaker:
    __slots__ = (
        "_bucket_s",
        "_buckets",
        "_clock",
        "_epoch",
        "consecutive",
        "ejections",
        "on_change",
        "open_until",
        "opts",
        "peers",
        "probes",
        "state",
    )

    def __init__(
        self,
        opts: BreakerOptions,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[Breaker], None] | None = None,
    ) -> None:
        self.opts = opts
        self._clock = clock
        self.state = CLOSED
        self.consecutive = 0
        self.ejections = 0
        self.open_until = 0.0
        self.probes = 0  # half-open trial requests in flight
        self.peers: list[Breaker] = [self]  # the breakers of the same group, self included
        self.on_change = on_change
        # a sliding window as _BUCKETS buckets of [requests, failures]
        self._bucket_s = opts.window / _BUCKETS
        self._buckets = [[0, 0] for _ in range(_BUCKETS)]
        self._epoch = [-1] * _BUCKETS

    # -- reading -----------------------------------------------------------------------

    def current(self, now: float | None = None) -> int:
        """The state now; an ejection that has run out becomes half-open."""
        if self.state == OPEN and (self._clock() if now is None else now) >= self.open_until:
            self._set(HALF_OPEN)
            self.probes = 0
        return self.state

    def available(self, now: float | None = None) -> bool:
        """Would a request be let through now (closed, or a free half-open probe slot)?"""
        s = self.current(now)
        return s == CLOSED or (s == HALF_OPEN and self.probes < self.opts.half_open_probes)

    def window_counts(self, now: float | None = None) -> tuple[int, int]:
        t = self._clock() if now is None else now
        cur = int(t // self._bucket_s)
        total = fails = 0
        for i in range(_BUCKETS):
            if cur - self._epoch[i] < _BUCKETS:
                total += self._buckets[i][0]
                fails += self._buckets[i][1]
        return total, fails

    def probe_passed(self, now: float | None = None) -> bool:
        """An active health check passed: end the ejection now (half-open, so a real
        request still confirms it). True if the breaker was open."""
        t = self._clock() if now is None else now
        if self.current(t) != OPEN:
            return False
        self.open_until = t
        self.current(t)
        return True

    # -- an attempt's life -------------------------------------------------------------

    def acquire(self) -> bool:
        """Called when an attempt starts; returns True if it is a half-open probe."""
        if self.current() == HALF_OPEN:
            self.probes += 1
            return True
        return False

    def record(self, outcome: str, probe: bool = False) -> None:
        """``outcome``: "success", "failure" or "neutral"."""
        if probe:
            self.probes = max(0, self.probes - 1)
        if outcome == "neutral":
            return
        now = self._clock()
        state = self.current(now)
        ok = outcome == "success"
        if state == HALF_OPEN:
            if ok:
                self._close()
            elif probe:
                self._trip(now, force=True)
            return
        if state == OPEN:
            return  # a straggler that started before the ejection: already counted out
        self._count(now, ok)
        if ok:
            self.consecutive = 0
            return
        self.consecutive += 1
        o = self.opts
        if self.consecutive >= o.consecutive_failures:
            self._trip(now)
            return
        total, fails = self.window_counts(now)
        if total >= o.min_requests and fails >= o.error_rate * total:
            self._trip(now)

    # -- transitions -------------------------------------------------------------------

    def _count(self, now: float, ok: bool) -> None:
        epoch = int(now // self._bucket_s)
        i = epoch % _BUCKETS
        b = self._buckets[i]
        if self._epoch[i] != epoch:
            self._epoch[i] = epoch
            b[0] = b[1] = 0
        b[0] += 1
        if not ok:
            b[1] += 1

    def _last_healthy(self) -> bool:
        return not any(p is not self and p.current() == CLOSED for p in self.peers)

    def _trip(self, now: float, force: bool = False) -> None:
        # force: a failed half-open probe; the group still has its closed member, if any
        if not force and self._last_healthy():
            return
        if now - self.open_until > self.opts.max_ejection:
            self.ejections = 0  # healthy for long: start over at the base ejection time
        self.ejections += 1
        self.open_until = now + self._duration()
        self.probes = 0
        self._set(OPEN)

    def _duration(self) -> float:
        o = self.opts
        return min(o.max_ejection, o.ejection * 2.0 ** max(0, self.ejections - 1))

    def _close(self) -> None:
        self.consecutive = 0
        self._buckets = [[0, 0] for _ in range(_BUCKETS)]
        self._epoch = [-1] * _BUCKETS
        self._set(CLOSED)

    def _set(self, state: int) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(self)

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        state = self.current(now)
        total, fails = self.window_counts(now)
        out: dict[str, object] = {
            "state": STATE_NAMES[state],
            "consecutive_failures": self.consecutive,
            "ejections": self.ejections,
            "window": {"requests": total, "failures": fails},
        }
        if state == OPEN:
            out["retry_in_s"] = round(max(0.0, self.open_until - now), 3)
        return out


def link(breakers: list[Breaker]) -> None:
    """Make ``breakers`` one group: none opens while it is the last closed one."""
    for b in breakers:
        b.peers = breakers
