"""One contract, three backends: memory, Redis standalone and a 3-primary Redis Cluster.

Times are pinned (``now_us``) so the expected numbers are exact; one test uses the
backend's own clock. Redis keys carry one hash tag per call, as the limiter builds them.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from _speedups import bucket as kernel
from gateway.store.base import Bucket, StateBackend, StateUnavailable
from gateway.store.redis import RedisBackend, parse_url

pytestmark = pytest.mark.anyio

T0 = 1_732_000_000_000_000
RPM = Bucket("gw:{t1}:rl:key:t1:r", 5, 5_000_000)  # 5 per 5 s: one per second
TPM = Bucket("gw:{t1}:rl:key:t1:t", 1000, 60_000_000)
MODEL_TPM = Bucket("gw:{t1}:rl:model:m:t", 100, 60_000_000)


async def test_reserve_takes_until_empty_then_waits_exactly(backend: StateBackend) -> None:
    for i in range(5):
        res = await backend.reserve([RPM], [1], now_us=T0)
        assert res.allowed and res.takes[0].remaining == 4 - i
    res = await backend.reserve([RPM], [1], now_us=T0)
    assert not res.allowed
    assert res.takes[0] == (False, 0, 1_000_000, 5_000_000)
    res = await backend.reserve([RPM], [1], now_us=T0 + 1_000_000)
    assert res.allowed and res.takes[0].reset_us == 5_000_000


async def test_all_or_nothing_across_scopes(backend: StateBackend) -> None:
    buckets = [RPM, TPM, MODEL_TPM]
    res = await backend.reserve(buckets, [1, 90, 90], now_us=T0)
    assert res.allowed
    assert [t.remaining for t in res.takes] == [4, 910, 10]
    # The model bucket has 10 left: the request is refused and nothing is taken anywhere.
    res = await backend.reserve(buckets, [1, 50, 50], now_us=T0)
    assert not res.allowed
    assert [t.ok for t in res.takes] == [True, True, False]
    assert [t.remaining for t in res.takes] == [4, 910, 10]  # as they stand
    assert res.takes[2].retry_after_us == 24_000_000  # 40 tokens at 100/min
    res = await backend.reserve(buckets, [1, 10, 10], now_us=T0)
    assert res.allowed and [t.remaining for t in res.takes] == [3, 900, 0]


async def test_amount_over_capacity_is_never(backend: StateBackend) -> None:
    res = await backend.reserve([MODEL_TPM], [101], now_us=T0)
    assert not res.allowed and res.takes[0].retry_after_us == kernel.NEVER


async def test_settle_refunds_and_charges(backend: StateBackend) -> None:
    res = await backend.reserve([TPM], [500], now_us=T0)
    assert res.takes[0].remaining == 500
    # used 200 of 500: 300 come back
    assert await backend.settle([TPM], [500], [200], now_us=T0) == [800]
    # a second request reserves 100 and uses 1,000: charged into debt
    await backend.reserve([TPM], [100], now_us=T0)
    assert await backend.settle([TPM], [100], [1000], now_us=T0) == [0]
    res = await backend.reserve([TPM], [1], now_us=T0)
    assert not res.allowed
    # debt of 200 + 1 token at 1000/min: 12.06 s
    assert res.takes[0].retry_after_us == 12_060_000
    # a refund never fills above capacity
    assert await backend.settle([TPM], [5000], [0], now_us=T0 + 10**9) == [1000]


async def test_settle_matches_kernel_step_by_step(backend: StateBackend) -> None:
    state: Any = kernel.FULL_STATE
    now = T0
    for i, (n, used) in enumerate([(400, 380), (300, 500), (250, 10), (900, 900), (100, 0)]):
        now += 700_000 * i
        ok, new, rem, _, _ = kernel.take(state, now, TPM.capacity, TPM.period_us, n)
        res = await backend.reserve([TPM], [n], now_us=now)
        assert (res.allowed, res.takes[0].remaining) == (ok, rem)
        if not ok:
            continue
        state, rem = kernel.settle(new, now + 1, TPM.capacity, TPM.period_us, n, used)
        assert await backend.settle([TPM], [n], [used], now_us=now + 1) == [rem]


async def test_server_clock_when_not_pinned(backend: StateBackend) -> None:
    b = Bucket("gw:{t2}:rl:key:t2:r", 3, 60_000_000)
    assert [(await backend.reserve([b], [1])).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    res = await backend.reserve([b], [1])
    assert 19_000_000 < res.takes[0].retry_after_us <= 20_000_000


async def test_concurrent_reservations_never_over_admit(backend: StateBackend) -> None:
    b = Bucket("gw:{t3}:rl:key:t3:r", 50, 3_600_000_000)  # 50 per hour: no refill to speak of
    t = Bucket("gw:{t3}:rl:key:t3:t", 10**6, 60_000_000)
    results = await asyncio.gather(*(backend.reserve([b, t], [1, 7]) for _ in range(120)))
    assert sum(r.allowed for r in results) == 50


async def test_errors_leave_no_trace(backend: StateBackend) -> None:
    bad = Bucket("gw:{t4}:rl:key:t4:t", 0, 1000)  # capacity 0 is out of range
    good = Bucket("gw:{t4}:rl:key:t4:r", 5, 1000)
    # memory: the kernel's ValueError; Redis: the script's error reply, which the
    # backend reports as unavailable (the request then follows the failure policy)
    with pytest.raises((ValueError, StateUnavailable)):
        await backend.reserve([good, bad], [1, 1], now_us=T0)
    res = await backend.reserve([good], [0], now_us=T0)
    assert res.takes[0].remaining == 5


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_script_flush_mid_test_is_survived(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        url, nodes = server.url, [server]
    else:
        cluster = request.getfixturevalue("redis_cluster")
        url, nodes = cluster.url, cluster.nodes
    b = RedisBackend(url, timeout=2.0)
    await b.start()
    try:
        tag = uuid.uuid4().hex[:8]
        key = Bucket(f"gw:{{{tag}}}:rl:key:flush:r", 100, 60_000_000)
        for i in range(6):
            for n in nodes:
                with n.client() as c:
                    c.script_flush()
            res = await b.reserve([key], [1])
            assert res.allowed and res.takes[0].remaining == 99 - i
            remaining = await b.settle([key], [1], [1])
            assert remaining == [99 - i]
        assert b.healthy
    finally:
        await b.aclose()


@pytest.mark.redis
async def test_redis_keys_expire_once_full(redis_server: Any) -> None:
    b = RedisBackend(redis_server.url, timeout=2.0)
    await b.start()
    try:
        key = Bucket("gw:{ttl}:rl:key:ttl:r", 10, 2_000_000)
        await b.reserve([key], [5])
        with redis_server.client() as c:
            ttl = c.pttl(key.key)
        # full again after 1 s; gone 1 s after that (missing = full)
        assert 1000 < ttl <= 2001
    finally:
        await b.aclose()


@pytest.mark.redis
async def test_refunds_of_a_loop_turn_go_out_as_one_call(redis_server: Any) -> None:
    """Refunds settled in one loop turn are summed per bucket into one script call (they
    commute, so the sum is exact); a charge keeps a call of its own."""
    b = RedisBackend(redis_server.url, timeout=2.0)
    await b.start()
    try:
        tpm = Bucket(f"gw:{{{uuid.uuid4().hex[:8]}}}:rl:key:r:t", 1000, 10**9)
        rpm = Bucket(tpm.key[:-1] + "r", 1000, 10**9)
        for _ in range(4):
            assert (await b.reserve([tpm, rpm], [100, 1])).allowed
        with redis_server.client() as c:
            c.config_resetstat()
        for _ in range(3):
            b.settle_later([tpm], [100], [40])  # refunds: 60 each
        b.settle_later([tpm], [100], [130])  # a charge of 30
        await asyncio.sleep(0.2)
        with redis_server.client() as c:
            calls = c.info("commandstats")["cmdstat_evalsha"]["calls"]
        assert calls == 2
        left = (await b.reserve([tpm], [0])).takes[0].remaining
        want = 1000 - 400 + 3 * 60 - 30  # one token a second refills meanwhile
        assert want <= left <= want + 2
    finally:
        await b.aclose()


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("redis://h:1/0", ("redis://h:1/0", False)),
        ("redis+cluster://h:1/0", ("redis://h:1/0", True)),
        ("rediss+cluster://u:p@h:1", ("rediss://u:p@h:1", True)),
        ("redis://h:1/0?cluster=true", ("redis://h:1/0", True)),
        (
            "redis://h:1/0?cluster=true&ssl_cert_reqs=none",
            ("redis://h:1/0?ssl_cert_reqs=none", True),
        ),
        ("redis://h:1/0?cluster=false", ("redis://h:1/0", False)),
    ],
)
def test_cluster_url_forms(url: str, want: tuple[str, bool]) -> None:
    assert parse_url(url) == want


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_marked_down_then_probe_brings_it_back(
    kind: str, request: pytest.FixtureRequest
) -> None:
    fixture = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
    b = RedisBackend(fixture.url, timeout=2.0, probe_interval=0.2)
    await b.start()
    try:
        key = Bucket(f"gw:{{{uuid.uuid4().hex[:8]}}}:rl:key:probe:r", 10, 60_000_000)
        b._mark_down("timeout")
        assert not b.healthy
        with pytest.raises(StateUnavailable) as info:
            await b.reserve([key], [1])
        assert info.value.reason == "down"  # not tried: fails at once
        for _ in range(50):
            if b.healthy:
                break
            await asyncio.sleep(0.05)
        assert b.healthy
        assert (await b.reserve([key], [1])).allowed
    finally:
        await b.aclose()


@pytest.mark.redis
async def test_unreachable_redis_fails_fast_and_marks_down() -> None:
    from tests.harness import closed_port

    b = RedisBackend(f"redis://127.0.0.1:{closed_port()}/0", timeout=0.05)
    await b.start()  # does not raise: limits fail over until Redis answers
    try:
        assert not b.healthy
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(StateUnavailable):
            await b.reserve([RPM], [1])
        assert asyncio.get_running_loop().time() - t0 < 0.05
        assert not await b.ping()
    finally:
        await b.aclose()


@pytest.mark.redis
async def test_script_error_is_unavailable_not_down(redis_cluster: Any) -> None:
    """Keys in two slots (what the limiter never builds): CROSSSLOT is reported as
    unavailable for that call, so the request follows the policy, and Redis stays up."""
    b = RedisBackend(redis_cluster.url, timeout=2.0)
    await b.start()
    try:
        split = [Bucket("gw:{a}:rl:x:r", 5, 1000), Bucket("gw:{b}:rl:x:r", 5, 1000)]
        with pytest.raises(StateUnavailable) as info:
            await b.reserve(split, [1, 1])
        assert info.value.reason == "error" and b.healthy
        assert (await b.reserve(split[:1], [1])).allowed
    finally:
        await b.aclose()
