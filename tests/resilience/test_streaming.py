"""The streaming contract: retry until the first content event, never after; idle and
total timeouts mid-stream; keep-alives; hedging."""

from __future__ import annotations

import asyncio
import json

from gateway.pipeline.relay import KEEPALIVE_FRAME, PendingStream
from tests.harness import wait_until
from tests.resilience.helpers import (
    Fault,
    alias,
    body_for,
    call,
    dep,
    drive,
    events,
    send,
    stream_text,
)

FAST = {"retry": {"attempts": 3, "backoff": 0.05, "max_backoff": 0.5}}
FULL = "w0 w1 w2 w3 w4 "


def prio(fault: Fault, *models: str, **kw: object) -> dict:
    deps = [dep(fault, m, priority=i) if isinstance(m, str) else m for i, m in enumerate(models)]
    return alias("a", *deps, strategy="priority", **kw)


def test_first_token_timeout_retries_elsewhere_without_duplicating(fault: Fault) -> None:
    stalled = dep(fault, "fault-stallbody-3s", timeout={"first_token": 0.3})
    out = drive([prio(fault, stalled, "fault-ok")], lambda gw: call(gw, "a", stream=True), FAST)
    assert out.status == 200 and out.attempts == 2
    assert out.text == FULL  # the stalled attempt's role chunk was never relayed
    assert out.raw.count(b'"role":"assistant"') == 1
    assert out.raw.endswith(b"data: [DONE]\n\n")
    assert 0.3 <= out.elapsed < 1.5


def test_cut_before_the_first_content_is_retried(fault: Fault) -> None:
    out = drive(
        [prio(fault, "fault-cut-0", "fault-ok")], lambda gw: call(gw, "a", stream=True), FAST
    )
    assert out.status == 200 and out.attempts == 2 and out.text == FULL
    assert (fault.count("fault-cut-0"), fault.count("fault-ok")) == (1, 1)


def test_cut_after_content_ends_with_an_error_event_and_no_retry(fault: Fault) -> None:
    async def scenario(gw):
        out = await call(gw, "a", stream=True)
        return out, out.served.result

    out, relay = drive([prio(fault, "fault-cut-3", "fault-ok")], scenario, FAST)
    assert out.status == 200 and out.attempts == 1
    assert out.text == "w0 w1 w2 "  # each piece once
    evs = events(out.raw)
    last = json.loads(evs[-1][len(b"data: ") :])
    assert set(last) == {"error"} and last["error"]["type"] == "upstream_error"
    assert b"[DONE]" not in out.raw
    assert fault.count("fault-ok") == 0  # committed: no retry, no fallback
    # what was generated is settled: an estimate, since the provider never reported usage
    assert relay.error is not None and relay.usage is not None
    assert relay.usage.completion_tokens >= 3 and relay.usage.prompt_tokens > 0


def test_idle_timeout_mid_stream_is_an_error_event(fault: Fault) -> None:
    trickle = dep(fault, "fault-trickle-3x800ms", timeout={"idle": 0.3})
    out = drive([alias("a", trickle)], lambda gw: call(gw, "a", stream=True), FAST)
    assert out.status == 200 and out.attempts == 1
    assert out.text == "w0 "
    last = json.loads(events(out.raw)[-1][6:])
    assert last["error"]["code"] == "stream_idle_timeout"
    assert b"[DONE]" not in out.raw
    assert out.elapsed < 1.0


def test_slow_trickle_within_the_idle_timeout_completes(fault: Fault) -> None:
    trickle = dep(fault, "fault-trickle-4x150ms", timeout={"idle": 1.0})
    out = drive([alias("a", trickle)], lambda gw: call(gw, "a", stream=True), FAST)
    assert out.text == "w0 w1 w2 w3 " and out.raw.endswith(b"data: [DONE]\n\n")
    assert 0.45 <= out.elapsed < 2.0


def test_total_timeout_ends_a_long_stream(fault: Fault) -> None:
    trickle = dep(fault, "fault-trickle-10x150ms", timeout={"total": 0.4})
    out = drive([alias("a", trickle)], lambda gw: call(gw, "a", stream=True), FAST)
    last = json.loads(events(out.raw)[-1][6:])
    assert last["error"]["code"] == "stream_total_timeout" and b"[DONE]" not in out.raw
    assert 0.4 <= out.elapsed < 1.2


# -- keep-alives ----------------------------------------------------------------------------


async def _stream_with_close(gw, model: str):
    closed: list[object] = []
    out, _ctx = await send(gw, body_for(model, True), on_close=closed.append)
    return out.served, out.frames, closed


def test_keepalives_while_waiting_then_content(fault: Fault) -> None:
    routing = {**FAST, "stream_keepalive": 0.2}
    late = dep(fault, "fault-stallbody-0.9s")
    served, frames, closed = drive(
        [alias("a", late)], lambda gw: _stream_with_close(gw, "a"), routing
    )
    assert isinstance(served.result, PendingStream)
    n = frames.count(KEEPALIVE_FRAME)
    assert 2 <= n <= 5  # one per 0.2 s of waiting
    assert frames.index(KEEPALIVE_FRAME) == 0
    raw = b"".join(frames)
    assert stream_text(raw) == FULL and raw.endswith(b"data: [DONE]\n\n")
    assert len(closed) == 1 and closed[0].completed and closed[0].error is None  # type: ignore[attr-defined]


def test_total_failure_after_keepalives_is_an_error_event(fault: Fault) -> None:
    routing = {"retry": {"attempts": 1}, "stream_keepalive": 0.2}
    never = dep(fault, "fault-stallbody-5s", timeout={"first_token": 0.7})
    _served, frames, closed = drive(
        [alias("a", never)], lambda gw: _stream_with_close(gw, "a"), routing
    )
    assert frames[0] == KEEPALIVE_FRAME
    raw = b"".join(frames)
    err = json.loads(events(raw)[-1][6:])["error"]
    assert err["code"] == "first_token_timeout" and b"[DONE]" not in raw
    assert len(closed) == 1 and closed[0].error is not None  # type: ignore[attr-defined]


def test_no_keepalive_when_the_answer_is_quick(fault: Fault) -> None:
    routing = {**FAST, "stream_keepalive": 0.5}
    served, frames, _ = drive(
        [alias("a", dep(fault, "fault-ok"))], lambda gw: _stream_with_close(gw, "a"), routing
    )
    assert not isinstance(served.result, PendingStream)
    assert KEEPALIVE_FRAME not in frames


# -- hedging --------------------------------------------------------------------------------


def test_hedge_serves_the_faster_and_cancels_the_other(fault: Fault) -> None:
    for stream in (False, True):
        fault.reset()
        models = [prio(fault, "fault-stall-3s", "fault-ok", hedge={"delay_ms": 200})]
        out = drive(models, lambda gw, s=stream: call(gw, "a", stream=s), FAST)
        assert out.status == 200 and out.attempts == 2, stream
        assert out.served.dep.model == "fault-ok" and out.text == FULL
        assert 0.2 <= out.elapsed < 1.0
        # the slow twin's request was closed, not left running
        assert wait_until(lambda: fault.gone("fault-stall-3s") == 1, timeout=3)


def test_no_hedge_when_the_first_answers_in_time(fault: Fault) -> None:
    models = [prio(fault, "fault-ok", "fault-slow-10ms", hedge={"delay_ms": 500})]
    out = drive(models, lambda gw: call(gw, "a", stream=True), FAST)
    assert out.attempts == 1 and fault.count("fault-slow-10ms") == 0


def test_hedge_then_both_fail_falls_back_to_retries(fault: Fault) -> None:
    slow_fail = dep(fault, "fault-stallbody-3s", timeout={"first_token": 0.4})
    models = [prio(fault, slow_fail, "fault-503", "fault-ok", hedge={"delay_ms": 100})]
    out = drive(models, lambda gw: call(gw, "a", stream=True), FAST)
    assert out.status == 200 and out.text == FULL and out.attempts == 3


def test_client_gone_mid_wait_closes_the_upstream(fault: Fault) -> None:
    async def scenario(gw):
        task = asyncio.ensure_future(call(gw, "a", stream=True))
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        st = gw.router.state(gw.registry.resolve("a").deployments[0])
        return st.in_flight

    in_flight = drive([alias("a", dep(fault, "fault-stallbody-3s"))], scenario, FAST)
    assert in_flight == 0
    assert wait_until(lambda: fault.gone("fault-stallbody-3s") == 1, timeout=3)
