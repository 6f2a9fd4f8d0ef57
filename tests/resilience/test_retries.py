"""Retries, backoff, Retry-After, the deadline and the retry budget, over real sockets to
the fault upstream (the attempt loop runs in-process, as the controllers call it)."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from gateway.api.embeddings import EMBEDDINGS
from gateway.pipeline.breaker import CLOSED
from tests.resilience.helpers import Fault, alias, call, dep, drive, send

FAST = {"retry": {"attempts": 3, "backoff": 0.1, "max_backoff": 1.0}}
SLACK = 0.25  # scheduling on two shared cores


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def expected_waits(seed: int, n: int, base: float = 0.1, cap: float = 1.0) -> list[float]:
    """The full-jitter waits the seeded router draws (single-deployment groups draw
    nothing else from the RNG)."""
    rng = random.Random(seed)
    return [rng.uniform(0.0, min(cap, base * 2**k)) for k in range(n)]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_retryable_status_is_retried_with_full_jitter_backoff(fault: Fault, status: int) -> None:
    model = f"fault-{status}"
    out = drive([alias("a", dep(fault, model))], lambda gw: call(gw, "a"), FAST, seed=3)
    assert out.error is not None and out.attempts == 3
    assert fault.count(model) == 3
    want = expected_waits(3, 2)
    for got, w, k in zip(gaps(fault.times(model)), want, range(2), strict=True):
        cap = min(1.0, 0.1 * 2**k)
        assert 0 <= w <= cap
        assert w - 0.02 <= got <= w + SLACK, (got, w)  # the drawn wait, within its range
    assert out.elapsed < sum(want) + 1.0


@pytest.mark.parametrize("status", [400, 404])
def test_client_errors_are_never_retried(fault: Fault, status: int) -> None:
    model = f"fault-{status}"

    async def scenario(gw):
        out = await call(gw, "a")
        st = gw.router.state(gw.registry.resolve("a").deployments[0])
        return out, st.breaker.consecutive

    out, consecutive = drive(
        [alias("a", dep(fault, model), dep(fault, "fault-ok"), strategy="priority")],
        scenario,
        FAST,
    )
    assert out.status == status and out.attempts == 1
    assert fault.count(model) == 1 and fault.count("fault-ok") == 0
    assert consecutive == 0  # a client's 4xx never counts against the deployment


def test_retry_goes_to_another_deployment_at_once(fault: Fault) -> None:
    models = [
        alias("a", dep(fault, "fault-503"), dep(fault, "fault-ok", priority=1), strategy="priority")
    ]
    out = drive(models, lambda gw: call(gw, "a"), FAST)
    assert out.status == 200 and out.attempts == 2
    assert out.served.dep.model == "fault-ok" and out.text.startswith("w0 ")
    assert (fault.count("fault-503"), fault.count("fault-ok")) == (1, 1)
    (t503,), (tok,) = fault.times("fault-503"), fault.times("fault-ok")
    assert tok - t503 < 0.2  # no backoff when switching deployments


def test_upstream_auth_failure_moves_on_but_never_repeats(fault: Fault) -> None:
    single = drive([alias("a", dep(fault, "fault-401"))], lambda gw: call(gw, "a"), FAST)
    assert single.status == 502 and single.attempts == 1
    fault.reset()
    models = [
        alias("a", dep(fault, "fault-401"), dep(fault, "fault-ok", priority=1), strategy="priority")
    ]
    out = drive(models, lambda gw: call(gw, "a"), FAST)
    assert out.status == 200 and out.attempts == 2


def test_connection_refused_is_retried_elsewhere(fault: Fault) -> None:
    from tests.harness import closed_port

    dead = {"provider": "openai", "model": "x", "base_url": f"http://127.0.0.1:{closed_port()}/v1"}
    out = drive(
        [alias("a", dead, dep(fault, "fault-ok", priority=1), strategy="priority")],
        lambda gw: call(gw, "a"),
        FAST,
    )
    assert out.status == 200 and out.attempts == 2 and out.elapsed < 1.0
    alone = drive([alias("b", dead)], lambda gw: call(gw, "b"), FAST)
    assert alone.status == 502 and alone.attempts == 3
    assert alone.error is not None and alone.error.code == "upstream_connect_failed"


def test_retry_after_is_honoured(fault: Fault) -> None:
    model = "fault-429-ms400"
    out = drive([alias("a", dep(fault, model))], lambda gw: call(gw, "a"), FAST)
    assert out.status == 429 and out.attempts == 3
    for g in gaps(fault.times(model)):
        assert 0.4 - 0.02 <= g <= 1.0 + SLACK  # never sooner than the upstream asked


def test_long_retry_after_goes_back_to_the_client_at_once(fault: Fault) -> None:
    out = drive([alias("a", dep(fault, "fault-429-ra7"))], lambda gw: call(gw, "a"), FAST)
    assert out.status == 429 and out.attempts == 1 and out.elapsed < 1.0
    assert out.error is not None and out.error.headers["retry-after"] == "7"


def test_a_wait_past_the_deadline_returns_the_429(fault: Fault) -> None:
    routing = {"retry": {"attempts": 5, "backoff": 0.1, "max_backoff": 2.0, "deadline": 0.5}}
    out = drive([alias("a", dep(fault, "fault-429-ra1"))], lambda gw: call(gw, "a"), routing)
    assert out.status == 429 and out.attempts == 1 and out.elapsed < 0.5
    assert out.error is not None and out.error.headers["retry-after"] == "1"


def test_one_deadline_bounds_all_attempts(fault: Fault) -> None:
    routing = {"retry": {"attempts": 10, "backoff": 0.05, "max_backoff": 0.1, "deadline": 1.0}}
    slow = dep(fault, "fault-late-503-300ms")
    out = drive([alias("a", slow)], lambda gw: call(gw, "a", stream=True), routing)
    # cut mid-attempt (504), or no wait fits before it (the last 503, as a 502)
    assert out.status in (502, 504) and 0.9 <= out.elapsed <= 1.0 + SLACK
    assert 3 <= out.attempts <= 4  # 0.3 s each plus jitter, cut by the deadline


def test_whole_answer_read_timeout_is_not_repeated(fault: Fault) -> None:
    slow = dep(fault, "fault-stall-2s", timeout={"read": 0.3})
    out = drive([alias("a", slow)], lambda gw: call(gw, "a"), FAST)
    assert out.status == 504 and out.attempts == 1 and out.elapsed < 1.0
    assert fault.count("fault-stall-2s") == 1


def test_malformed_answer_is_retried_elsewhere(fault: Fault) -> None:
    for stream in (False, True):
        fault.reset()
        models = [
            alias(
                "a",
                dep(fault, "fault-badjson"),
                dep(fault, "fault-ok", priority=1),
                strategy="priority",
            )
        ]
        out = drive(models, lambda gw, s=stream: call(gw, "a", stream=s), FAST)
        assert out.status == 200 and out.attempts == 2, stream
        assert out.text == "w0 w1 w2 w3 w4 "


def test_reset_connection_is_retried(fault: Fault) -> None:
    models = [
        alias(
            "a", dep(fault, "fault-reset"), dep(fault, "fault-ok", priority=1), strategy="priority"
        )
    ]
    out = drive(models, lambda gw: call(gw, "a"), FAST)
    assert out.status == 200 and out.attempts == 2


class CheckedCounters:
    """The router's in-flight counters, checking the budget at each retry's start."""

    def __init__(self, ratio: float, floor: int) -> None:
        self.requests = 0
        self._retries = 0
        self.ratio, self.floor = ratio, floor
        self.excess: list[float] = []

    @property
    def retries(self) -> int:
        return self._retries

    @retries.setter
    def retries(self, value: int) -> None:
        if value > self._retries:
            self.excess.append(value - (self.ratio * self.requests + self.floor))
        self._retries = value


def test_retry_budget_caps_concurrent_retries(fault: Fault) -> None:
    routing = {
        **FAST,
        "retry_budget": {"ratio": 0.2, "min_retries": 1},
        "breaker": {"consecutive_failures": 1000},
    }
    counters = CheckedCounters(0.2, 1)

    async def scenario(gw):
        gw.router.active = counters
        return await asyncio.gather(*(call(gw, "a", stream=True) for _ in range(10)))

    stall = "fault-late-503-200ms"  # every attempt fails after 0.2 s: retries overlap
    outs = drive([alias("a", dep(fault, stall))], scenario, routing)
    assert all(o.status == 502 for o in outs)
    assert counters.excess and max(counters.excess) <= 1e-9  # <= 20% of requests + 1
    assert sum(o.attempts for o in outs) < 30  # some retries were refused
    assert fault.count(stall) == sum(o.attempts for o in outs)
    assert counters.retries == 0 and counters.requests == 0


def test_no_budget_means_no_retries(fault: Fault) -> None:
    routing = {**FAST, "retry_budget": {"ratio": 0.0, "min_retries": 0}}
    out = drive([alias("a", dep(fault, "fault-503"))], lambda gw: call(gw, "a"), routing)
    assert out.status == 502 and out.attempts == 1


def test_embeddings_are_retried_too(fault: Fault) -> None:
    async def scenario(gw):
        out, _ctx = await send(gw, {"model": "e", "input": "hi"}, EMBEDDINGS)
        return out

    out = drive([alias("e", dep(fault, "fault-flaky-2"))], scenario, FAST)
    assert out.status == 200 and out.attempts == 3 and fault.count("fault-flaky-2") == 3


def test_breaker_state_after_retries(fault: Fault) -> None:
    async def scenario(gw):
        await call(gw, "a")
        d = gw.registry.resolve("a").deployments[0]
        return gw.router.state(d).breaker

    b = drive([alias("a", dep(fault, "fault-503"))], scenario, FAST)
    assert b.consecutive == 3 and b.state == CLOSED  # the last healthy one is never ejected
