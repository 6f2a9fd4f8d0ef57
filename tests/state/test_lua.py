"""The Lua scripts repeat ``_speedups.bucket`` exactly: every shared vector, random
sequences against the kernel, and the script files' shared math block kept identical."""

from __future__ import annotations

import json
import random
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _speedups import _bucket_py as kernel
from gateway.store import scripts
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

VECTORS = json.loads(
    (Path(__file__).parent.parent / "data" / "bucket_vectors.json").read_text(encoding="utf-8")
)


@pytest.fixture(scope="module")
def r(redis_server: RedisServer) -> Any:
    c = redis_server.client()
    c.flushall()
    yield c
    c.close()


def _reserve(r: Any, key: str, now: int, c: int, p: int, n: int) -> list[int]:
    reply = r.eval(scripts.source("ratelimit_reserve"), 1, key, now, c, p, n)
    return [int(x) for x in reply.split()]


def _settle(r: Any, key: str, now: int, c: int, p: int, res: int, act: int) -> list[int]:
    reply = r.eval(scripts.source("ratelimit_settle"), 1, key, now, c, p, res, act)
    return [int(x) for x in reply.split()]


def _lua_op(r: Any, key: str, cap: int, period: int, op: dict[str, Any]) -> dict[str, Any]:
    """One vector op through the scripts, shaped like the vector's ``expect``."""
    try:
        if op["op"] in ("take", "refill"):
            # refill(state) is the state a take of 0 leaves (raised to now if full)
            rep = _reserve(r, key, op["now_us"], cap, period, op.get("n", 0))
            got: dict[str, Any] = {
                "allowed": rep[1] == 1,
                "state": [rep[5], rep[6]],
                "remaining": rep[2],
                "retry_after_us": rep[3],
                "reset_us": rep[4],
            }
            assert (rep[0] == 1) == got["allowed"]
            return {"state": got["state"]} if op["op"] == "refill" else got
        rep = _settle(r, key, op["now_us"], cap, period, op["reserved"], op["actual"])
        return {"state": [rep[1], rep[2]], "remaining": rep[0]}
    except redis_sync.ResponseError as exc:
        return {"error": str(exc).split(":")[0]}


def _stored(r: Any, key: str) -> list[int] | None:
    raw = r.get(key)
    return None if raw is None else [int(x) for x in raw.split()]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_lua_reproduces_shared_vectors(r: Any, vector: dict[str, Any]) -> None:
    key = "vec:" + vector["name"]
    r.delete(key)
    if "state" in vector:
        r.set(key, f"{vector['state'][0]} {vector['state'][1]}")
    for i, op in enumerate(vector["ops"]):
        before = _stored(r, key)
        got = _lua_op(r, key, vector["capacity"], vector["period_us"], op)
        want = op.get("expect") or {"error": op["error"]}
        assert got == want, (vector["name"], i, op)
        if "error" in want:
            assert _stored(r, key) == before, "an error must leave no trace"
        elif op["op"] == "settle" or got.get("allowed"):
            assert _stored(r, key) == want["state"], "the reply's state is what is stored"


def _random_ops(rng: random.Random, cap: int, period: int, count: int) -> list[dict[str, Any]]:
    now = rng.choice([0, 10**6, 1_732_000_000_000_000, kernel.MAX_TIME_US - 10 * period])
    ops: list[dict[str, Any]] = []
    for _ in range(count):
        now += rng.choice([0, 0, 1, rng.randrange(1, period + 2), rng.randrange(period * 3 + 1)])
        now = min(now, kernel.MAX_TIME_US)
        kind = rng.random()
        if kind < 0.6:
            ops.append({"op": "take", "now_us": now, "n": rng.randrange(0, cap + 2)})
        else:
            res = rng.randrange(0, cap + 1)
            act = rng.choice([0, res, rng.randrange(0, 2 * cap + 2)])
            ops.append({"op": "settle", "now_us": now, "reserved": res, "actual": act})
        if rng.random() < 0.05:  # a clock that steps back
            now = max(0, now - rng.randrange(1, period + 1))
    return ops


def _kernel_op(state: Any, cap: int, period: int, op: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    try:
        if op["op"] == "take":
            ok, new, rem, retry, reset = kernel.take(state, op["now_us"], cap, period, op["n"])
            got = {
                "allowed": ok,
                "state": list(new),
                "remaining": rem,
                "retry_after_us": retry,
                "reset_us": reset,
            }
            return (new if ok else state), got
        new, rem = kernel.settle(state, op["now_us"], cap, period, op["reserved"], op["actual"])
        return new, {"state": list(new), "remaining": rem}
    except ValueError:
        return state, {"error": "ValueError"}


SHAPES = [
    (1, 1),
    (3, 7),
    (7, 1000),
    (600, 60_000_000),
    (200_000, 60_000_000),
    (1_000_000_000, 1),
    (1, kernel.MAX_PERIOD_US),
    (kernel.MAX_CAPACITY, kernel.MAX_PERIOD_US),
    (kernel.MAX_CAPACITY, 3),
    (12345, 98765),
]


@pytest.mark.parametrize(("cap", "period"), SHAPES, ids=[f"{c}per{p}" for c, p in SHAPES])
def test_lua_matches_kernel_on_random_sequences(r: Any, cap: int, period: int) -> None:
    rng = random.Random(f"{cap}/{period}")
    key = f"rand:{cap}:{period}"
    r.delete(key)
    state: Any = kernel.FULL_STATE
    for i, op in enumerate(_random_ops(rng, cap, period, 120)):
        state, want = _kernel_op(state, cap, period, op)
        got = _lua_op(r, key, cap, period, op)
        assert got == want, (i, op)


def test_both_scripts_splice_in_the_one_shared_math_block() -> None:
    """The GCRA math is written once, in the ``ratelimit_gcra.lua`` prelude: each script
    file names it on one ``#include`` line (no pasted copy that could drift), and the
    text Redis is sent holds the whole prelude once, in place of that line."""
    store = resources.files("gateway.store")
    prelude = store.joinpath("ratelimit_gcra.lua").read_text(encoding="utf-8")
    assert prelude.count("-- BEGIN gcra") == prelude.count("-- END gcra") == 1
    include = re.compile(r"^-- #include ratelimit_gcra\.lua\n", re.MULTILINE)
    for name in scripts.RATELIMIT_SCRIPTS:
        raw = store.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        assert len(include.findall(raw)) == 1, name
        assert "-- BEGIN gcra" not in raw, name
        sent = scripts.source(name)
        assert sent.count(prelude) == 1 and not include.search(sent), name
        assert include.sub("", raw) == sent.replace(prelude, "", 1), name


def test_headers_name_keys_argv_and_reply() -> None:
    for name in scripts.RATELIMIT_SCRIPTS:
        head = scripts.source(name).split("\n\n")[0]
        for word in ("KEYS", "ARGV", "Reply"):
            assert word in head, (name, word)


_MULDIV = scripts.source("ratelimit_gcra") + (
    "\nlocal q, r = muldiv(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))\n"
    "return string.format('%.0f %.0f', q, r)\n"
)
_SAFE = kernel.MAX_AMOUNT
_FACTOR = kernel.MAX_CAPACITY  # a and d: at most 2**40 - 1 (capacity and period alike)


def _lua_muldiv(r: Any, b: int, a: int, d: int) -> tuple[int, int]:
    q, rem = r.eval(_MULDIV, 0, b, a, d).split()
    return int(q), int(rem)


# Each path of muldiv: the plain product, a * b split as (a // d) * b + (a % d) * b,
# a % d == 0, the long multiplication, and a quotient on either side of 2**53 - 1.
MULDIV_EDGES = [
    (0, 1, 1),
    (59_999_999, 10_000_000_000, 60_000_000),
    (59_999_999, 150_000_000, 60_000_000),
    (_SAFE, 1, 1),
    (_SAFE, 2, 2),
    (_SAFE, 3, 2),
    (_SAFE // 3, 3, 1),
    (_SAFE // 3 + 1, 3, 1),
    (_SAFE, _FACTOR, _FACTOR),
    (_SAFE, _FACTOR, _FACTOR - 1),
    (_FACTOR, _FACTOR, 1),
    (_FACTOR, _FACTOR, 2**20),
    (2**40, 2**40 - 1, 2**27),
    (123_456_789_012, 987_654_321, 3),
]


@pytest.mark.parametrize(("b", "a", "d"), MULDIV_EDGES)
def test_lua_muldiv_matches_kernel_on_edges(r: Any, b: int, a: int, d: int) -> None:
    assert _lua_muldiv(r, b, a, d) == kernel._muldiv(b, a, d)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    b=st.one_of(st.integers(0, _SAFE), st.integers(0, 2**40)),
    a=st.integers(1, _FACTOR),
    d=st.one_of(st.integers(1, _FACTOR), st.integers(1, 2**27)),
)
def test_lua_muldiv_matches_kernel(r: Any, b: int, a: int, d: int) -> None:
    """``(a * b // d, a * b % d)`` exactly, or (-1, 0) past 2**53 - 1, as the kernel."""
    assert _lua_muldiv(r, b, a, d) == kernel._muldiv(b, a, d)
