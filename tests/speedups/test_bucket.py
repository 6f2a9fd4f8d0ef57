"""Token-bucket (GCRA) math: shared vectors, an exact rational oracle, twin agreement.

The oracle below restates the semantics with ``fractions.Fraction`` and no
integer tricks; the twins' split arithmetic must match it exactly. The vectors
in ``tests/data/bucket_vectors.json`` are checked against the oracle too, so a
hand edit that breaks them fails here before it misleads the Lua script.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.speedups.conftest import SELECTED, needs_c, variant

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "data" / "bucket_vectors.json").read_text("utf-8"))

MAX_CAPACITY = 2**40 - 1
MAX_PERIOD_US = 2**40 - 1
MAX_TIME_US = 2**52
MAX_TAT_US = 2**53 - 2**42
MAX_AMOUNT = 2**53 - 1
EPOCH_NOW = 1_732_000_000_000_000  # late 2024 in epoch µs

ERRORS = {"ValueError": ValueError, "TypeError": TypeError}


# --- the oracle: GCRA over exact rationals -------------------------------------------------


class OracleError(ValueError):
    pass


def _check(value: int, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    if not lo <= value <= hi:
        raise OracleError(value)
    return value


def _tat(state: list[int] | tuple[int, int], c: int) -> Fraction:
    tu = _check(state[0], 0, MAX_TAT_US)
    tf = _check(state[1], 0, MAX_AMOUNT)
    tat = tu + Fraction(tf, c)
    if math.floor(tat) > MAX_TAT_US:
        raise OracleError(state)
    return tat


def _state(tat: Fraction, c: int) -> tuple[int, int]:
    tu = math.floor(tat)
    tf = (tat - tu) * c
    assert tf.denominator == 1
    return tu, int(tf)


def _whole_tokens(tat: Fraction, now: int, c: int, p: int) -> int:
    return max(0, math.floor((now + p - tat) * Fraction(c, p)))


def oracle_take(state: Any, now: int, c: int, p: int, n: int) -> tuple[Any, ...]:
    _check(c, 1, MAX_CAPACITY), _check(p, 1, MAX_PERIOD_US)
    _check(now, 0, MAX_TIME_US), _check(n, 0, MAX_AMOUNT)
    tat = _tat(state, c)
    base = max(tat, now)
    reset = math.ceil(base - now)
    if n > c:
        return False, _state(tat, c), _whole_tokens(base, now, c, p), -1, reset
    new = base + Fraction(n * p, c)
    if new <= now + p:
        return True, _state(new, c), _whole_tokens(new, now, c, p), 0, math.ceil(new - now)
    retry = math.ceil(new - now - p)
    return False, _state(tat, c), _whole_tokens(base, now, c, p), retry, reset


def oracle_settle(state: Any, now: int, c: int, p: int, reserved: int, actual: int) -> Any:
    _check(c, 1, MAX_CAPACITY), _check(p, 1, MAX_PERIOD_US), _check(now, 0, MAX_TIME_US)
    _check(reserved, 0, MAX_AMOUNT), _check(actual, 0, MAX_AMOUNT)
    new = max(_tat(state, c), now) + Fraction((actual - reserved) * p, c)
    if math.floor(new) > MAX_TAT_US:
        raise OracleError("debt")
    new = max(new, now)
    return _state(new, c), _whole_tokens(new, now, c, p)


def oracle_refill(state: Any, now: int, c: int, p: int) -> tuple[int, int]:
    _check(c, 1, MAX_CAPACITY), _check(p, 1, MAX_PERIOD_US), _check(now, 0, MAX_TIME_US)
    return _state(max(_tat(state, c), now), c)


class Oracle:
    """Quacks like a twin module, for replaying vectors."""

    take = staticmethod(oracle_take)
    settle = staticmethod(oracle_settle)
    refill = staticmethod(oracle_refill)


# --- replaying operations ------------------------------------------------------------------


def apply(mod: Any, state: Any, c: int, p: int, op: dict[str, Any]) -> dict[str, Any]:
    """Run one vector operation; return its outputs in the vectors' JSON shape."""
    kind = op["op"]
    if kind == "take":
        allowed, new, remaining, retry, reset = mod.take(state, op["now_us"], c, p, op["n"])
        return {
            "allowed": allowed,
            "state": list(new),
            "remaining": remaining,
            "retry_after_us": retry,
            "reset_us": reset,
        }
    if kind == "settle":
        new, remaining = mod.settle(state, op["now_us"], c, p, op["reserved"], op["actual"])
        return {"state": list(new), "remaining": remaining}
    assert kind == "refill", kind
    return {"state": list(mod.refill(state, op["now_us"], c, p))}


def replay(mod: Any, scenario: dict[str, Any]) -> None:
    c, p = scenario["capacity"], scenario["period_us"]
    state = tuple(scenario.get("state", (0, 0)))
    for i, op in enumerate(scenario["ops"]):
        where = f"{scenario['name']} op {i}: {op}"
        if "error" in op:
            with pytest.raises(ERRORS[op["error"]]):
                apply(mod, state, c, p, op)
            continue
        got = apply(mod, state, c, p, op)
        assert got == op["expect"], where
        state = tuple(got["state"])


SCENARIOS = [pytest.param(s, id=s["name"]) for s in VECTORS]


def test_vectors_cover_the_brief() -> None:
    names = {s["name"] for s in VECTORS}
    assert len(VECTORS) >= 30
    assert len(names) == len(VECTORS)
    ops = {op["op"] for s in VECTORS for op in s["ops"]}
    assert ops == {"take", "settle", "refill"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_vectors(bucket_impl: ModuleType, scenario: dict[str, Any]) -> None:
    replay(bucket_impl, scenario)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_vectors_agree_with_oracle(scenario: dict[str, Any]) -> None:
    replay(Oracle, scenario)


# --- semantics, on both twins ---------------------------------------------------------------


def test_selector_reexports(bucket_impl: ModuleType) -> None:
    from _speedups import bucket

    assert variant(bucket_impl) == bucket_impl.IMPLEMENTATION
    assert bucket_impl.FULL_STATE == (0, 0)
    assert bucket_impl.NEVER == -1
    assert (bucket.MAX_CAPACITY, bucket.MAX_PERIOD_US) == (MAX_CAPACITY, MAX_PERIOD_US)
    assert (bucket.MAX_TIME_US, bucket.MAX_TAT_US) == (MAX_TIME_US, MAX_TAT_US)
    assert bucket.MAX_AMOUNT == MAX_AMOUNT
    assert bucket.IMPLEMENTATION == SELECTED


def test_rpm_burst_then_exact_retry(bucket_impl: ModuleType) -> None:
    take = bucket_impl.take
    state = bucket_impl.FULL_STATE
    for i in range(600):
        allowed, state, remaining, retry, _ = take(state, EPOCH_NOW, 600, 60_000_000, 1)
        assert (allowed, remaining, retry) == (True, 599 - i, 0)
    allowed, same, remaining, retry, reset = take(state, EPOCH_NOW, 600, 60_000_000, 1)
    assert (allowed, same, remaining, retry, reset) == (False, state, 0, 100_000, 60_000_000)
    assert not take(state, EPOCH_NOW + retry - 1, 600, 60_000_000, 1)[0]
    assert take(state, EPOCH_NOW + retry, 600, 60_000_000, 1)[0]


def test_no_drift_over_many_calls(bucket_impl: ModuleType) -> None:
    """200k takes paced exactly at the rate, T = 1000/7 µs: all admitted, state exact."""
    c, p, t0, calls = 7, 1000, EPOCH_NOW, 200_000
    take = bucket_impl.take
    state = (t0, 0)
    for i in range(calls):
        allowed, state, _, _, _ = take(state, t0 + i * p // c, c, p, 1)
        assert allowed
    assert state == (t0 + calls * p // c, calls * p % c)


def test_clock_backwards_never_mints(bucket_impl: ModuleType) -> None:
    take, refill = bucket_impl.take, bucket_impl.refill
    c, p = 100, 10_000_000
    _, state, remaining, _, _ = take(bucket_impl.FULL_STATE, EPOCH_NOW, c, p, 60)
    assert remaining == 40
    for back in (1, 1_000, 5_000_000, 10**9, EPOCH_NOW):
        earlier = EPOCH_NOW - back
        assert refill(state, earlier, c, p) == state
        assert take(state, earlier, c, p, 0)[2] <= 40
        assert not take(state, earlier, c, p, 41)[0]


def test_settle_refund_charge_and_debt(bucket_impl: ModuleType) -> None:
    take, settle = bucket_impl.take, bucket_impl.settle
    c, p, now = 1000, 60_000_000, EPOCH_NOW
    _, state, remaining, _, _ = take(bucket_impl.FULL_STATE, now, c, p, 800)
    assert remaining == 200
    refunded, remaining = settle(state, now, c, p, 800, 300)
    assert remaining == 700
    full, remaining = settle(refunded, now, c, p, 5_000, 0)
    assert (full, remaining) == ((now, 0), c)  # never above capacity
    debt, remaining = settle(state, now, c, p, 800, 2_500)  # 1_000 - 2_500: 1_500 in debt
    assert remaining == 0
    allowed, same, _, retry, reset = take(debt, now, c, p, 1)
    assert not allowed and same == debt
    assert retry == (1_500 + 1) * p // c  # 1_500 tokens of debt plus the one asked for
    assert reset == (2_500 * p) // c
    assert take(debt, now + retry, c, p, 1)[0]


def test_rejects_n_over_capacity_with_never(bucket_impl: ModuleType) -> None:
    allowed, state, remaining, retry, reset = bucket_impl.take((0, 0), EPOCH_NOW, 10, 1_000, 11)
    assert (allowed, state, remaining, retry, reset) == (False, (0, 0), 10, -1, 0)


def test_remaining_is_exactly_what_take_admits(bucket_impl: ModuleType) -> None:
    take = bucket_impl.take
    c, p = 1_000_000_000, 86_400_000_000  # the documented exactness target
    _, state, remaining, _, _ = take((0, 0), EPOCH_NOW, c, p, 999_999_999)
    assert remaining == 1
    later = EPOCH_NOW + 12_345_678
    rem = take(state, later, c, p, 0)[2]
    assert take(state, later, c, p, rem)[0]
    assert not take(state, later, c, p, rem + 1)[0]


BAD_CALLS = [
    ("take", ((0, 0), 0, 0, 1, 1), ValueError),  # capacity 0
    ("take", ((0, 0), 0, -5, 1, 1), ValueError),
    ("take", ((0, 0), 0, 1, 0, 1), ValueError),  # period 0
    ("take", ((0, 0), 0, 1, -1, 1), ValueError),
    ("take", ((0, 0), 0, 1, 1, -1), ValueError),  # negative n
    ("take", ((0, 0), -1, 1, 1, 1), ValueError),  # negative time
    ("take", ((0, 0), MAX_TIME_US + 1, 1, 1, 1), ValueError),
    ("take", ((0, 0), 0, MAX_CAPACITY + 1, 1, 1), ValueError),
    ("take", ((0, 0), 0, 1, MAX_PERIOD_US + 1, 1), ValueError),
    ("take", ((0, 0), 0, 1, 1, MAX_AMOUNT + 1), ValueError),
    ("take", ((0, 0), 2**63, 1, 1, 1), ValueError),  # beyond int64: not OverflowError
    ("take", ((0, 0), 0, 2**64, 1, 1), ValueError),
    ("take", ((0, 0), 0, 1, 1, -(2**63) - 1), ValueError),
    ("take", ((0, 0), 0, 1, 1, 10**40), ValueError),
    ("take", ((2**63, 0), 0, 1, 1, 1), ValueError),
    ("take", ((0, -1), 0, 1, 1, 1), ValueError),
    ("take", ((-1, 0), 0, 1, 1, 1), ValueError),
    ("take", ((MAX_TAT_US + 1, 0), 0, 1, 1, 1), ValueError),
    ("take", ((MAX_TAT_US, 2), 0, 2, 1, 1), ValueError),  # carrying tat_frac overflows
    ("take", ((0, 0), 1.0, 1, 1, 1), TypeError),
    ("take", ((0, 0), 0, True, 1, 1), TypeError),
    ("take", ((0, 0), 0, 1, 1, None), TypeError),
    ("take", ((0, 0), 0, 1, 1, "1"), TypeError),
    ("take", ((0,), 0, 1, 1, 1), TypeError),
    ("take", ((0, 0, 0), 0, 1, 1, 1), TypeError),
    ("take", (None, 0, 1, 1, 1), TypeError),
    ("take", ("ab", 0, 1, 1, 1), TypeError),
    ("take", ((0.0, 0), 0, 1, 1, 1), TypeError),
    ("settle", ((0, 0), 0, 1, 1, -1, 0), ValueError),
    ("settle", ((0, 0), 0, 1, 1, 0, -1), ValueError),
    ("settle", ((0, 0), 0, 1, 1, 0, 2**63), ValueError),
    ("settle", ((0, 0), 0, 1, MAX_PERIOD_US, 0, MAX_AMOUNT), ValueError),  # debt overflow
    ("settle", ((MAX_TAT_US, 0), 0, 1, 1, 0, 1), ValueError),
    ("settle", ((0, 0), 0, 1, 1, 0, 1.5), TypeError),
    ("refill", ((0, 0), 0, 0, 1), ValueError),
    ("refill", ((0, 0), 0, 1, 0), ValueError),
    ("refill", ((0, 0), 2**64, 1, 1), ValueError),
    ("refill", ([0], 0, 1, 1), TypeError),
]


@pytest.mark.parametrize(("func", "args", "exc"), BAD_CALLS)
def test_bad_input_raises_clearly(
    bucket_impl: ModuleType, func: str, args: tuple[Any, ...], exc: type[Exception]
) -> None:
    with pytest.raises(exc) as info:
        getattr(bucket_impl, func)(*args)
    assert type(info.value) is exc  # not OverflowError, not a subclass
    assert str(info.value)


def test_accepts_lists_and_int_subclasses(bucket_impl: ModuleType) -> None:
    from enum import IntEnum

    class Cap(IntEnum):
        RPM = 600

    a = bucket_impl.take([1, 0], EPOCH_NOW, Cap.RPM, 60_000_000, 1)
    b = bucket_impl.take((1, 0), EPOCH_NOW, 600, 60_000_000, 1)
    assert a == b


def test_capacity_change_carries_tat_frac(bucket_impl: ModuleType) -> None:
    # a state written under capacity 1000 (tat_frac 750), read under capacity 300
    assert bucket_impl.refill((EPOCH_NOW, 750), 0, 300, 1_000) == (EPOCH_NOW + 2, 150)


# --- properties ------------------------------------------------------------------------------

capacities = st.one_of(
    st.integers(1, 20), st.integers(1, 10**6), st.integers(1, MAX_CAPACITY), st.just(MAX_CAPACITY)
)
periods = st.one_of(
    st.integers(1, 100),
    st.sampled_from([1_000_000, 60_000_000, 3_600_000_000, 86_400_000_000]),
    st.integers(1, MAX_PERIOD_US),
)
amounts = st.one_of(st.integers(0, 30), st.integers(0, 10**7), st.integers(0, MAX_AMOUNT))


@st.composite
def op_sequences(draw: st.DrawFn, *, takes_only: bool = False) -> dict[str, Any]:
    c, p = draw(capacities), draw(periods)
    t0 = draw(st.one_of(st.integers(0, 10**6), st.just(EPOCH_NOW), st.integers(0, MAX_TIME_US)))
    t = t0
    ops: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 25))):
        step = draw(
            st.one_of(
                st.integers(0, 3),
                st.integers(-(p // 2) - 1, p + 1),  # clock may go backwards
                st.integers(0, 10 * p),
            )
        )
        t = min(max(t + step, 0), MAX_TIME_US)
        small = st.one_of(st.integers(0, min(c, 40)), st.integers(0, c), st.integers(0, c + 2))
        kind = "take" if takes_only else draw(st.sampled_from(["take", "take", "settle", "refill"]))
        if kind == "take":
            ops.append({"op": "take", "now_us": t, "n": draw(small)})
        elif kind == "settle":
            reserved = draw(small)
            actual = draw(st.one_of(small, amounts))
            ops.append({"op": "settle", "now_us": t, "reserved": reserved, "actual": actual})
        else:
            ops.append({"op": "refill", "now_us": t})
    return {"capacity": c, "period_us": p, "ops": ops}


def outcomes(mod: Any, seq: dict[str, Any]) -> list[Any]:
    state: Any = (0, 0)
    out: list[Any] = []
    for op in seq["ops"]:
        try:
            got = apply(mod, state, seq["capacity"], seq["period_us"], op)
        except (ValueError, TypeError) as exc:
            out.append(type(exc).__mro__[1] if isinstance(exc, OracleError) else type(exc))
            continue
        out.append(got)
        state = tuple(got["state"])
    return out


@settings(max_examples=300, deadline=None)
@given(seq=op_sequences())
def test_matches_oracle(bucket_impl: ModuleType, seq: dict[str, Any]) -> None:
    assert outcomes(bucket_impl, seq) == outcomes(Oracle, seq)


@settings(max_examples=200, deadline=None)
@given(seq=op_sequences(takes_only=True))
def test_admitted_never_exceed_capacity_plus_rate(
    bucket_impl: ModuleType, seq: dict[str, Any]
) -> None:
    """Admitted tokens stamped in [t0, t1] <= capacity + rate * (t1 - t0), clock skew included."""
    c, p = seq["capacity"], seq["period_us"]
    admitted: list[tuple[int, int]] = []
    for op, got in zip(seq["ops"], outcomes(bucket_impl, seq), strict=True):
        if got["allowed"]:
            admitted.append((op["now_us"], op["n"]))
    times = sorted({t for t, _ in admitted})
    for i, t0 in enumerate(times):
        for t1 in times[i:]:
            total = sum(n for t, n in admitted if t0 <= t <= t1)
            assert total * p <= c * p + (t1 - t0) * c


@settings(max_examples=200, deadline=None)
@given(
    c=capacities,
    p=periods,
    tu=st.integers(0, MAX_TIME_US),
    tf=st.integers(0, MAX_CAPACITY),
    now=st.integers(0, MAX_TIME_US),
    n=st.integers(0, MAX_CAPACITY),
)
def test_retry_after_is_exact(
    bucket_impl: ModuleType, c: int, p: int, tu: int, tf: int, now: int, n: int
) -> None:
    state = (tu, tf % c)
    allowed, same, _, retry, _ = bucket_impl.take(state, now, c, p, n)
    if n > c:
        assert (allowed, retry) == (False, -1)
    elif not allowed:
        assert same == state and retry > 0
        if now + retry <= MAX_TIME_US:
            assert bucket_impl.take(state, now + retry, c, p, n)[0]
        if now + retry - 1 <= MAX_TIME_US:
            assert not bucket_impl.take(state, now + retry - 1, c, p, n)[0]
    else:
        assert retry == 0


# --- the twins agree, and the selector picks the compiled one -------------------------------

anything = st.one_of(
    st.integers(-(2**65), 2**65), st.booleans(), st.none(), st.floats(), st.text(max_size=2)
)


def _call(mod: Any, func: str, args: tuple[Any, ...]) -> Any:
    try:
        return getattr(mod, func)(*args)
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)


@needs_c
@settings(max_examples=300, deadline=None)
@given(seq=op_sequences())
def test_twins_agree_on_sequences(seq: dict[str, Any]) -> None:
    from _speedups import _bucket_c, _bucket_py

    assert outcomes(_bucket_c, seq) == outcomes(_bucket_py, seq)


@needs_c
@settings(max_examples=300, deadline=None)
@given(
    func=st.sampled_from(["take", "settle", "refill"]),
    state=st.one_of(st.tuples(anything, anything), anything, st.lists(st.integers(), max_size=3)),
    args=st.lists(st.one_of(anything, st.integers(0, 2**53)), min_size=5, max_size=5),
)
def test_twins_agree_on_bad_input(func: str, state: Any, args: list[Any]) -> None:
    from _speedups import _bucket_c, _bucket_py

    arity = {"take": 4, "settle": 5, "refill": 3}[func]
    call = (state, *args[:arity])
    assert _call(_bucket_c, func, call) == _call(_bucket_py, func, call)
