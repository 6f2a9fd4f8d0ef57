"""Circuit breakers: the state machine on a fake clock, then a live deployment ejected,
probed and restored over real sockets, visible in /health's data and the metric."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from gateway.config import BreakerOptions
from gateway.pipeline.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, link
from tests.resilience.helpers import Fault, alias, call, dep, drive


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def group(n: int, clock: Clock, **opts: object) -> list[Breaker]:
    bs = [Breaker(BreakerOptions(**opts), clock) for _ in range(n)]  # type: ignore[arg-type]
    link(bs)
    return bs


def test_opens_after_consecutive_failures_and_success_resets() -> None:
    clock = Clock()
    a, _b = group(2, clock, consecutive_failures=3)
    a.record("failure")
    a.record("failure")
    a.record("success")
    a.record("failure")
    a.record("failure")
    assert a.current() == CLOSED
    a.record("failure")
    assert a.current() == OPEN and not a.available()


def test_client_errors_and_cancellations_never_count() -> None:
    clock = Clock()
    a, _b = group(2, clock, consecutive_failures=1)
    for _ in range(50):
        a.record("neutral")
    assert a.current() == CLOSED and a.window_counts() == (0, 0)


def test_error_rate_over_the_window() -> None:
    clock = Clock()
    a, _b = group(2, clock, consecutive_failures=100, error_rate=0.5, window=10, min_requests=10)
    for i in range(9):
        a.record("failure" if i % 2 == 0 else "success")
        clock.t += 0.1
    assert a.current() == CLOSED  # 5 of 9, under min_requests
    a.record("success")
    assert a.current() == CLOSED  # 5 of 10 failed ... on a success: no trip
    a.record("failure")
    assert a.current() == OPEN  # 6 of 11


def test_old_failures_leave_the_window() -> None:
    clock = Clock()
    a, _b = group(2, clock, consecutive_failures=100, error_rate=0.5, window=10, min_requests=6)
    for _ in range(4):
        a.record("failure")
    a.record("success")
    clock.t += 11
    for _ in range(5):
        a.record("success")
    a.record("failure")
    assert a.current() == CLOSED and a.window_counts() == (6, 1)


def test_ejection_grows_and_half_open_probes() -> None:
    clock = Clock()
    a, _b = group(2, clock, consecutive_failures=1, ejection=1, max_ejection=3, half_open_probes=1)
    a.record("failure")
    assert a.current() == OPEN and a.open_until == pytest.approx(clock.t + 1)
    clock.t += 1
    assert a.current() == HALF_OPEN and a.available()
    assert a.acquire() is True  # the probe
    assert not a.available()  # one probe at a time
    a.record("failure", probe=True)
    assert a.current() == OPEN and a.open_until == pytest.approx(clock.t + 2)  # doubled
    clock.t += 2
    a.record("failure", probe=a.acquire())
    assert a.open_until == pytest.approx(clock.t + 3)  # capped at max_ejection
    clock.t += 3
    assert a.acquire() is True
    a.record("success", probe=True)
    assert a.current() == CLOSED and a.consecutive == 0
    # healthy for longer than max_ejection: the next ejection starts at the base again
    clock.t += 10
    a.record("failure")
    assert a.open_until == pytest.approx(clock.t + 1)


def test_never_ejects_the_last_healthy_deployment() -> None:
    clock = Clock()
    a, b = group(2, clock, consecutive_failures=1, ejection=5)
    a.record("failure")
    for _ in range(20):
        b.record("failure")
    assert (a.current(), b.current()) == (OPEN, CLOSED)
    clock.t += 5
    a.record("success", probe=a.acquire())
    b.record("failure")
    assert (a.current(), b.current()) == (CLOSED, OPEN)
    (single,) = group(1, clock, consecutive_failures=1)
    for _ in range(10):
        single.record("failure")
    assert single.current() == CLOSED


def _gauge(model: str) -> float | None:
    return REGISTRY.get_sample_value("llm_breaker_state", {"provider": "openai", "model": model})


def test_live_ejection_probe_and_recovery(fault: Fault) -> None:
    flaky = "fault-dyn-breaker"
    fault.behave(flaky, "fault-503")
    routing = {
        "retry": {"attempts": 2, "backoff": 0.05},
        "breaker": {"consecutive_failures": 2, "ejection": 0.4, "max_ejection": 5},
    }
    models = [
        alias("brk", dep(fault, flaky), dep(fault, "fault-ok", priority=1), strategy="priority")
    ]

    async def scenario(gw):
        first = gw.registry.resolve("brk").deployments[0]
        b = gw.router.state(first).breaker
        outs = [await call(gw, "brk") for _ in range(2)]
        assert [o.attempts for o in outs] == [2, 2] and b.state == OPEN
        assert _gauge("brk") == 2
        health = gw.router.health(gw.registry.groups)["brk"]
        assert [d["breaker"]["state"] for d in health["deployments"]] == ["open", "closed"]
        ejected = await call(gw, "brk")  # not sent to the ejected deployment at all
        assert ejected.attempts == 1 and ejected.served.dep.model == "fault-ok"
        assert fault.count(flaky) == 2
        await asyncio.sleep(0.45)
        assert b.current() == HALF_OPEN and _gauge("brk") == 1
        fault.behave(flaky, None)  # it recovered
        probe = await call(gw, "brk")
        assert probe.attempts == 1 and probe.served.dep.model == flaky
        assert b.state == CLOSED and _gauge("brk") == 0
        return True

    assert drive(models, scenario, routing)


def test_a_passing_health_check_half_opens_only_an_open_breaker() -> None:
    clock = Clock()
    a, _b = group(2, clock, consecutive_failures=1, ejection=30)
    assert a.probe_passed() is False and a.current() == CLOSED
    a.record("failure")
    assert a.current() == OPEN
    clock.t += 1  # 29 s of the ejection left
    assert a.probe_passed() is True and a.current() == HALF_OPEN and a.available()
    assert a.probe_passed() is False  # already half-open: the real request decides
    a.record("failure", probe=a.acquire())
    assert a.current() == OPEN and a.open_until == pytest.approx(clock.t + 60)
    assert a.probe_passed() is True  # the doubled ejection ends early too
    a.record("success", probe=a.acquire())
    assert a.current() == CLOSED
