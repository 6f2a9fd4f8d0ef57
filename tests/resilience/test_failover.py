"""Failover as an operator would tune it: 429s with only the providers' reset headers,
hanging upstreams (timeouts move on, never repeat), and the defaults themselves.
Over real sockets to the fault upstream; the attempt loop runs in-process."""

from __future__ import annotations

import pytest

from gateway.api.chat import CHAT
from gateway.config import (
    DEFAULT_DEADLINE,
    DEFAULT_FIRST_TOKEN,
    BreakerOptions,
    RetryPolicy,
    Timeouts,
    health_check,
)
from gateway.errors import UpstreamStatus, UpstreamTimeout
from gateway.pipeline import attempts
from tests.resilience.helpers import Fault, alias, body_for, call, context, dep, drive

FAST = {"retry": {"attempts": 3, "backoff": 0.05, "max_backoff": 1.0}}
RESETS_20S = "fault-429-oai-20s-6m0s"  # requests spent, reset in 20 s; tokens reset in 6 min


def prio(name: str, *deps: dict, **kw: object) -> dict:
    ranked = [{**d, "priority": i} for i, d in enumerate(deps)]
    return alias(name, *ranked, strategy="priority", **kw)


# -- 429 with only the provider's reset headers ----------------------------------------------


def test_reset_headers_429_goes_back_with_retry_after_and_no_repeat(fault: Fault) -> None:
    out = drive([alias("a", dep(fault, RESETS_20S))], lambda gw: call(gw, "a"), FAST)
    assert out.status == 429 and out.attempts == 1
    assert fault.count(RESETS_20S) == 1  # not retried within its wait
    assert out.error is not None
    assert out.error.headers["retry-after"] == "20"
    assert out.error.headers["retry-after-ms"] == "20000"


def test_reset_headers_429_fails_over_and_the_deployment_is_left_alone(fault: Fault) -> None:
    async def scenario(gw):
        return [await call(gw, "a"), await call(gw, "a", stream=True), await call(gw, "a")]

    models = [prio("a", dep(fault, RESETS_20S), dep(fault, "fault-ok"))]
    outs = drive(models, scenario, FAST)
    assert [o.status for o in outs] == [200, 200, 200]
    assert [o.attempts for o in outs] == [2, 1, 1]  # later requests go elsewhere at once
    assert fault.count(RESETS_20S) == 1


def test_a_short_reset_is_waited_for_on_the_same_deployment(fault: Fault) -> None:
    model = "fault-429-oai-300ms-1ms"
    routing = {"retry": {"attempts": 2, "backoff": 0.01, "max_backoff": 1.0}}
    out = drive([alias("a", dep(fault, model))], lambda gw: call(gw, "a"), routing)
    assert out.status == 429 and out.attempts == 2
    first, second = fault.times(model)
    assert second - first >= 0.3 - 0.02  # never sooner than the reset
    assert out.error is not None and out.error.headers["retry-after-ms"] == "300"


def test_a_reset_past_the_deadline_is_not_waited_for(fault: Fault) -> None:
    model = "fault-429-oai-800ms-1ms"
    routing = {"retry": {"attempts": 3, "backoff": 0.01, "max_backoff": 2.0, "deadline": 0.5}}
    out = drive([alias("a", dep(fault, model))], lambda gw: call(gw, "a"), routing)
    assert out.status == 429 and out.attempts == 1 and fault.count(model) == 1


def test_anthropic_reset_headers(fault: Fault) -> None:
    model = "fault-429-ant-30-300"  # requests spent, reset in 30 s; tokens in 5 min
    ant = {"provider": "anthropic", "model": model, "base_url": fault.root}
    out = drive([alias("a", ant)], lambda gw: call(gw, "a"), FAST)
    assert out.status == 429 and out.attempts == 1 and fault.count(model) == 1
    assert out.error is not None
    assert 28 <= int(out.error.headers["retry-after"]) <= 30
    assert 28_000 <= int(out.error.headers["retry-after-ms"]) <= 30_000
    fault.reset()
    out = drive([prio("b", ant, dep(fault, "fault-ok"))], lambda gw: call(gw, "b"), FAST)
    assert out.status == 200 and out.attempts == 2 and fault.count(model) == 1


# -- hanging upstreams ---------------------------------------------------------------------


def test_hanging_stream_moves_to_the_fallback_not_the_same_deployment(fault: Fault) -> None:
    models = [
        alias("a", dep(fault, "fault-hang", timeout={"first_token": 0.4}), fallbacks=["b"]),
        alias("b", dep(fault, "fault-ok")),
    ]
    out = drive(models, lambda gw: call(gw, "a", stream=True), FAST)
    assert out.status == 200 and out.attempts == 2 and out.text == "w0 w1 w2 w3 w4 "
    assert fault.count("fault-hang") == 1
    assert out.elapsed >= 0.4  # the first-token timeout ran out first


def test_hanging_whole_answer_moves_to_the_next_deployment(fault: Fault) -> None:
    hang = dep(fault, "fault-hang", timeout={"read": 0.4})
    out = drive([prio("a", hang, dep(fault, "fault-ok"))], lambda gw: call(gw, "a"), FAST)
    assert out.status == 200 and out.attempts == 2
    assert fault.count("fault-hang") == 1
    fault.reset()
    models = [alias("a", hang, fallbacks=["b"]), alias("b", dep(fault, "fault-ok"))]
    out = drive(models, lambda gw: call(gw, "a"), FAST)
    assert out.status == 200 and out.attempts == 2 and fault.count("fault-hang") == 1


def test_a_lone_hanging_deployment_fails_fast(fault: Fault) -> None:
    hang = dep(fault, "fault-hang", timeout={"first_token": 0.3})
    out = drive([alias("a", hang)], lambda gw: call(gw, "a", stream=True), FAST)
    assert out.status == 504 and out.attempts == 1 and fault.count("fault-hang") == 1
    assert out.error is not None and out.error.code == "first_token_timeout"


def test_timeouts_move_on_and_never_repeat() -> None:
    first_token = UpstreamTimeout("no first token", provider="openai", kind="first_token")
    connect = UpstreamTimeout("connect timeout", provider="openai", kind="connect")
    read = UpstreamTimeout("read timeout", provider="openai", kind="read")
    for err in (first_token, connect, read):
        assert err.retry == "elsewhere"
        assert attempts.breaker_outcome(err) == "failure"
    deadline = UpstreamTimeout("deadline", provider="openai", kind="deadline")
    assert deadline.retry == "never"
    assert attempts.breaker_outcome(deadline) == "neutral"
    limited = UpstreamStatus("429", provider="openai", upstream_status=429, status=429)
    assert limited.retry == "any" and limited.breaker


# -- the defaults themselves ------------------------------------------------------------------


def test_default_timeouts_leave_room_for_a_fallback(fault: Fault) -> None:
    assert Timeouts().first_token == DEFAULT_FIRST_TOKEN == 20.0
    assert DEFAULT_DEADLINE == 90.0 and RetryPolicy().deadline is None
    # a hung primary, a second hung deployment, then a fallback: inside 60-120 s clients
    assert 2 * DEFAULT_FIRST_TOKEN < 60 and DEFAULT_DEADLINE < 120
    assert BreakerOptions().ejection == 30 and BreakerOptions().max_ejection == 120
    hc = health_check()
    assert (hc.enabled, hc.interval, hc.timeout, hc.path) == (True, 3.0, 2.0, None)

    async def scenario(gw):
        out = {}
        for name in ("o", "n"):
            run = _loop(gw, name)
            out[name] = (run.group.deployments[0].timeouts, run.deadline - run.t0)
        return out

    ant = {"provider": "anthropic", "model": "claude-x", "base_url": fault.root}
    models = [alias("o", dep(fault, "fault-ok")), alias("n", ant)]
    got = drive(models, scenario)
    for timeouts, deadline in got.values():
        assert timeouts.first_token == 20.0 and deadline == pytest.approx(90.0)
    short = drive(
        [alias("o", dep(fault, "fault-ok", timeout={"total": 30}))],
        lambda gw: _deadline(gw, "o"),
    )
    assert short == 30.0  # a group whose streams may last only 30 s waits no longer
    legacy = drive(
        [alias("o", dep(fault, "fault-ok", timeout={"first_token": None, "read": 7}))],
        lambda gw: _first_token(gw, "o"),
    )
    assert legacy == 7.0  # an explicit null: as long as the read timeout


async def _first_token(gw, name: str) -> float:
    return float(gw.registry.resolve(name).deployments[0].timeouts.first_token)


def _loop(gw, name: str) -> attempts.Loop:
    """The attempt loop a streamed request for ``name`` would run (not started)."""
    ctx = context(CHAT, body_for(name, stream=True))
    ctx.endpoint, ctx.body, ctx.stream = CHAT, body_for(name, stream=True), True
    ctx.group = gw.registry.resolve(name)
    ctx.plan = list(ctx.group.deployments)
    return attempts.Loop(gw.gateway, ctx)


async def _deadline(gw, name: str) -> float:
    run = _loop(gw, name)
    return round(run.deadline - run.t0, 6)  # t0 is a large monotonic float


@pytest.mark.parametrize("stream", [False, True])
def test_failover_from_a_hang_under_default_timeouts_fits_the_deadline(
    fault: Fault, stream: bool
) -> None:
    """Scaled down 40x (first_token 0.5 s, deadline 2.25 s, read 1.5 s as 60 s): a hung
    primary and a hung second deployment still leave the fallback time to answer."""
    t = {"first_token": DEFAULT_FIRST_TOKEN / 40, "read": 60 / 40}
    models = [
        prio("a", dep(fault, "fault-hang", timeout=t), dep(fault, "fault-hang", timeout=t),
             fallbacks=["b"], retry={"attempts": 3, "deadline": DEFAULT_DEADLINE / 40}),
        alias("b", dep(fault, "fault-ok")),
    ]  # fmt: skip
    if not stream:  # a whole answer waits for its headers up to the read timeout
        models[0]["deployments"] = models[0]["deployments"][:1]
    out = drive(models, lambda gw: call(gw, "a", stream=stream), FAST)
    assert out.status == 200 and out.text == "w0 w1 w2 w3 w4 "
    assert out.attempts == (3 if stream else 2)
    assert fault.count("fault-hang") == out.attempts - 1
