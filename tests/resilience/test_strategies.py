"""Routing strategies at unit level: a seeded RNG and fed latencies, no sockets."""

from __future__ import annotations

import math
import random
from collections import Counter

import httpx

from gateway.config import BreakerOptions, Price, RoutingOptions
from gateway.pipeline.routing import Router
from gateway.providers.base import Deployment, Timeouts
from gateway.providers.registry import ModelGroup

T = Timeouts(connect=1, read=60, first_token=60, idle=60, total=600)


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError("this test sends nothing upstream")


OFFLINE = httpx.MockTransport(_refuse)


def d(model: str, **kw: object) -> Deployment:
    return Deployment(
        provider="openai",
        model=model,
        label="g",
        base_url="http://x",
        api_key=None,
        timeouts=T,
        transport=OFFLINE,  # routing only: nothing is sent
        adapter=None,
        **kw,  # type: ignore[arg-type]
    )


def router(seed: int = 1, **opts: object) -> Router:
    return Router(RoutingOptions(**opts), rng=random.Random(seed))  # type: ignore[arg-type]


def firsts(r: Router, g: ModelGroup, n: int, **kw: object) -> Counter[str]:
    return Counter(r.plan(g, **kw)[0].model for _ in range(n))  # type: ignore[arg-type]


def test_weighted_choices_follow_the_weights() -> None:
    g = ModelGroup("g", "g", (d("a", weight=3), d("b", weight=1), d("z", weight=0)), "weighted")
    n = 8000
    c = firsts(router(), g, n)
    p = 0.75
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(c["a"] - n * p) < 4 * sigma, c
    assert c["z"] == 0  # weight 0: only when everything else failed
    assert all(r[-1].model == "z" for r in (router(s).plan(g) for s in range(20)))


def test_least_latency_moves_away_from_a_slow_deployment_and_back() -> None:
    a, b = d("a"), d("b")
    g = ModelGroup("g", "g", (a, b), "least-latency")
    r = router(seed=5, exploration=0.05)
    latency = {a: 0.1, b: 0.1}

    def run(n: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(n):
            first = r.plan(g, stream=True)[0]
            seen[first.model] += 1
            r.state(first).observe(ttft=latency[first])
        return seen

    run(200)
    latency[a] = 1.0  # a slows down
    run(100)
    slowed = run(500)
    assert slowed["a"] < 0.1 * 500, slowed  # only exploration reaches it
    assert slowed["a"] > 0  # ...but exploration does
    latency[a] = 0.02  # a recovers, and is faster than b now
    run(400)
    recovered = run(500)
    assert recovered["a"] > 0.85 * 500, recovered


def test_least_latency_tries_unmeasured_deployments_first() -> None:
    a, b = d("a"), d("b")
    g = ModelGroup("g", "g", (a, b), "least-latency")
    r = router(exploration=0.0)
    r.state(a).observe(ttft=0.01, total=0.5)
    assert r.plan(g, stream=True)[0] is b
    r.state(b).observe(ttft=0.2, total=0.2)
    assert r.plan(g, stream=True)[0] is a  # by time to first token for streams
    assert r.plan(g, stream=False)[0] is b  # by total latency for whole answers


def test_least_busy_picks_the_fewest_in_flight() -> None:
    a, b, c = d("a"), d("b"), d("c", weight=2)
    g = ModelGroup("g", "g", (a, b, c), "least-busy")
    r = router()
    r.state(a).in_flight, r.state(b).in_flight, r.state(c).in_flight = 3, 1, 4
    assert [x.model for x in r.plan(g)] == ["b", "c", "a"]  # c: 4 / weight 2 = 2
    r.state(b).in_flight = 2
    assert Counter(r.plan(g)[0].model for _ in range(400)).keys() == {"b", "c"}  # ties: random


def test_lowest_cost_uses_prompt_and_max_tokens() -> None:
    cheap_in = d("cheap-in", price=Price(input=0.1, output=10.0))
    cheap_out = d("cheap-out", price=Price(input=5.0, output=1.0))
    g = ModelGroup("g", "g", (cheap_in, cheap_out), "lowest-cost")
    r = router()
    # a long prompt, a short answer: input price dominates
    assert r.plan(g, prompt_tokens=100_000, max_tokens=10)[0] is cheap_in
    # a short prompt, a long answer: output price dominates
    assert r.plan(g, prompt_tokens=10, max_tokens=4000)[0] is cheap_out


def test_priority_uses_the_first_tier_then_escalates() -> None:
    p0a, p0b, p1 = d("p0a", priority=0), d("p0b", priority=0, weight=3), d("p1", priority=1)
    g = ModelGroup("g", "g", (p1, p0a, p0b), "priority")
    r = router(breaker=BreakerOptions(consecutive_failures=1))
    plans = [r.plan(g) for _ in range(400)]
    assert all(p[-1] is p1 for p in plans)  # tier 1 only after tier 0
    c = Counter(p[0].model for p in plans)
    assert 0.65 < c["p0b"] / 400 < 0.85  # weights within a tier
    r.register(g)
    r.state(p0a).breaker.record("failure")  # ejected (others are healthy)
    r.state(p0b).breaker.record("failure")  # ejected (p1 is still healthy)
    assert r.plan(g)[0] is p1


def test_cooling_and_ejected_deployments_go_last() -> None:
    a, b, c = d("a"), d("b"), d("c")
    g = ModelGroup("g", "g", (a, b, c), "priority")
    r = router(breaker=BreakerOptions(consecutive_failures=1))
    r.register(g)
    r.cool_down(a, 30)  # a 429 said Retry-After: 30
    r.state(b).breaker.record("failure")
    assert r.plan(g) == [c, a, b]
