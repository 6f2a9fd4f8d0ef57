"""Fallbacks to other aliases, and the context-length fallback."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.resilience.helpers import Fault, alias, call, dep, drive

ONE = {"retry": {"attempts": 1}}


def fallbacks(model: str, reason: str) -> float:
    v = REGISTRY.get_sample_value("llm_fallbacks_total", {"model": model, "reason": reason})
    return v or 0.0


def test_an_exhausted_group_falls_back_in_order(fault: Fault) -> None:
    models = [
        alias("a", dep(fault, "fault-503"), fallbacks=["b", "c"], retry={"attempts": 2}),
        alias("b", dep(fault, "fault-502"), fallbacks=["c"]),  # c once, not twice
        alias("c", dep(fault, "fault-ok")),
    ]
    before = fallbacks("a", "exhausted")
    out = drive(models, lambda gw: call(gw, "a"), {"retry": {"attempts": 1, "backoff": 0.05}})
    assert out.status == 200 and out.served.dep.label == "c"
    assert out.attempts == 4  # a twice, b once, c once
    (a1, a2), (b1,), (c1,) = (fault.times(m) for m in ("fault-503", "fault-502", "fault-ok"))
    assert a1 < a2 < b1 < c1
    assert fallbacks("a", "exhausted") == before + 2  # a -> b, then a -> c


def test_all_exhausted_returns_the_last_error(fault: Fault) -> None:
    models = [
        alias("a", dep(fault, "fault-503"), fallbacks=["b"]),
        alias("b", dep(fault, "fault-429-ra30")),
    ]
    out = drive(models, lambda gw: call(gw, "a"), ONE)
    assert out.status == 429 and out.attempts == 2
    assert out.error is not None and out.error.headers["retry-after"] == "30"


def test_client_error_does_not_fall_back(fault: Fault) -> None:
    models = [
        alias("a", dep(fault, "fault-400"), fallbacks=["b"]),
        alias("b", dep(fault, "fault-ok")),
    ]
    out = drive(models, lambda gw: call(gw, "a"), ONE)
    assert out.status == 400 and out.attempts == 1 and fault.count("fault-ok") == 0


def test_context_length_error_goes_to_the_larger_alias(fault: Fault) -> None:
    models = [
        alias(
            "small",
            dep(fault, "fault-context"),
            dep(fault, "fault-503"),
            context_fallback="big",
            fallbacks=["other"],
        ),
        alias("big", dep(fault, "fault-ok", timeout={"read": 5})),
        alias("other", dep(fault, "fault-500")),
    ]
    before = fallbacks("small", "context_length")
    out = drive(models, lambda gw: call(gw, "small"), {"retry": {"attempts": 3}}, seed=1)
    assert out.status == 200 and out.served.dep.label == "big"
    assert fault.count("fault-context") == 1 and fault.count("fault-500") == 0
    assert fallbacks("small", "context_length") == before + 1


def test_context_length_error_without_a_fallback_passes_through(fault: Fault) -> None:
    models = [
        alias("small", dep(fault, "fault-context"), fallbacks=["b"]),
        alias("b", dep(fault, "fault-ok")),
    ]
    out = drive(models, lambda gw: call(gw, "small"), {"retry": {"attempts": 3}})
    assert out.status == 400 and out.attempts == 1
    assert out.error is not None and out.error.code == "context_length_exceeded"
    assert fault.count("fault-ok") == 0


def test_fallbacks_share_the_deadline(fault: Fault) -> None:
    slow = dep(fault, "fault-late-503-400ms")  # fails after 0.4 s, may be retried
    models = [
        alias("a", slow, fallbacks=["b"], retry={"attempts": 5, "deadline": 0.6}),
        alias("b", dep(fault, "fault-ok")),
    ]
    out = drive(models, lambda gw: call(gw, "a", stream=True), {"retry": {"backoff": 0.3}})
    # a's attempts run out the deadline (0.4 s, a wait, a cut attempt): b is never reached
    assert out.status == 504 and out.elapsed < 0.6 + 0.3
    assert fault.count("fault-ok") == 0
