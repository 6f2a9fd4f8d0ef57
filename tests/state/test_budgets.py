"""USD budget counters and the tenants' store: one contract, three backends (memory,
Redis standalone, a 3-primary Redis Cluster).

Budgets ride in the rate-limit scripts after the buckets: all or nothing with them,
``used + hold <= limit`` to admit, settle replaces a hold by the real cost. Keys of one
call share the ``{rl}`` tag, as the limiter builds them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from gateway.store.base import Bucket, Budget, StateBackend
from gateway.store.redis import RedisBackend

pytestmark = pytest.mark.anyio

T0 = 1_732_000_000_000_000


def _names() -> tuple[Budget, Budget, Bucket]:
    u = uuid.uuid4().hex[:8]
    expire = int(time.time()) + 3600
    key = Budget(f"gw:{{rl}}:budget:key:{u}:all", 1000, expire)
    team = Budget(f"gw:{{rl}}:budget:team:{u}:all", 2500, 0)
    rpm = Bucket(f"gw:{{rl}}:rl:key:{u}:r", 3, 60_000_000)
    return key, team, rpm


async def test_budget_admits_while_the_hold_fits(backend: StateBackend) -> None:
    key, _, _ = _names()
    for used in (400, 800):
        res = await backend.reserve([], [], spend=[(key, 400)], now_us=T0)
        assert res.allowed and list(res.spend) == [(True, used)]
    res = await backend.reserve([], [], spend=[(key, 400)], now_us=T0)  # 800 + 400 > 1000
    assert not res.allowed and list(res.spend) == [(False, 800)]
    res = await backend.reserve([], [], spend=[(key, 200)], now_us=T0)  # exactly full
    assert res.allowed and res.spend[0].used == 1000
    res = await backend.reserve([], [], spend=[(key, 0)], now_us=T0)  # full: a free one fits
    assert res.allowed
    res = await backend.reserve([], [], spend=[(key, 1)], now_us=T0)
    assert not res.allowed


async def test_all_or_nothing_with_buckets_and_both_budgets(backend: StateBackend) -> None:
    key, team, rpm = _names()
    res = await backend.reserve([rpm], [1], spend=[(key, 600), (team, 600)], now_us=T0)
    assert res.allowed and [t.used for t in res.spend] == [600, 600]
    assert res.takes[0].remaining == 2
    # the key budget refuses: neither the bucket nor the team counter moves
    res = await backend.reserve([rpm], [1], spend=[(key, 600), (team, 600)], now_us=T0)
    assert not res.allowed and [tuple(t) for t in res.spend] == [(False, 600), (True, 600)]
    assert res.takes[0] == (True, 2, 0, res.takes[0].reset_us)
    # the bucket refuses: the budgets do not move
    await backend.reserve([rpm], [2], now_us=T0)
    res = await backend.reserve([rpm], [1], spend=[(key, 100), (team, 100)], now_us=T0)
    assert not res.allowed and not res.takes[0].ok
    assert [tuple(t) for t in res.spend] == [(True, 600), (True, 600)]


async def test_settle_replaces_the_hold_by_the_cost(backend: StateBackend) -> None:
    key, team, _ = _names()
    await backend.reserve([], [], spend=[(key, 700), (team, 700)], now_us=T0)
    await backend.settle([], [], [], spend=[(key, 700, 250), (team, 700, 250)], now_us=T0)
    res = await backend.reserve([], [], spend=[(key, 750)], now_us=T0)  # 250 + 750 = 1000
    assert res.allowed and res.spend[0].used == 1000
    await backend.settle([], [], [], spend=[(key, 750, 0)], now_us=T0)  # a refund
    await backend.settle([], [], [], spend=[(key, 5000, 0)], now_us=T0)  # never below 0
    res = await backend.reserve([], [], spend=[(key, 1000)], now_us=T0)
    assert res.allowed and res.spend[0].used == 1000
    # a cost above the hold is charged, never refused: the counter passes the limit
    await backend.settle([], [], [], spend=[(key, 1000, 1300)], now_us=T0)
    assert await backend.tenants().budget_used([key.key]) == [1300]
    res = await backend.reserve([], [], spend=[(key, 0)], now_us=T0)
    assert not res.allowed


async def test_settle_corrects_buckets_and_budgets_in_one_call(backend: StateBackend) -> None:
    key, _, _ = _names()
    tpm = Bucket(f"gw:{{rl}}:rl:key:{uuid.uuid4().hex[:6]}:t", 100, 60_000_000)
    res = await backend.reserve([tpm], [80], spend=[(key, 900)], now_us=T0)
    assert res.allowed
    left = await backend.settle([tpm], [80], [30], spend=[(key, 900, 100)], now_us=T0)
    assert left == [70]
    assert await backend.tenants().budget_used([key.key]) == [100]


async def test_redis_counters_expire_with_their_period(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("redis_server")
    b = RedisBackend(server.url, timeout=2.0)
    await b.start()
    try:
        key, team, _ = _names()
        await b.reserve([], [], spend=[(key, 10), (team, 10)])
        with server.client() as c:
            assert 3500 < c.ttl(key.key) <= 3600
            assert c.ttl(team.key) == -1  # a total budget never resets
    finally:
        await b.aclose()


# -- the tenants' store -----------------------------------------------------------------------


async def test_records_and_digest_entries(backend: StateBackend) -> None:
    store = backend.tenants()
    u = uuid.uuid4().hex[:8]
    await store.put("key", f"k1-{u}", b'{"v":1}', digest=f"d1-{u}")
    assert await store.by_digest(f"d1-{u}") == b'{"v":1}'
    assert await store.get("key", f"k1-{u}") == b'{"v":1}'
    # rotation: the new digest maps, the old one is gone, in one call
    await store.put("key", f"k1-{u}", b'{"v":2}', digest=f"d2-{u}", drop_digest=f"d1-{u}")
    assert await store.by_digest(f"d1-{u}") is None
    assert await store.by_digest(f"d2-{u}") == b'{"v":2}'
    # revocation: the record stays (listed), no digest reaches it
    await store.put("key", f"k1-{u}", b'{"v":3}', drop_digest=f"d2-{u}")
    assert await store.by_digest(f"d2-{u}") is None
    assert b'{"v":3}' in await store.all("key")
    await store.put("team", f"t-{u}", b'{"t":1}')
    assert b'{"t":1}' in await store.all("team")
    await store.put("team", f"t-{u}", None)
    assert await store.get("team", f"t-{u}") is None
    assert b'{"t":1}' not in await store.all("team")


async def test_ledger_adds_exactly(backend: StateBackend) -> None:
    store = backend.tenants()
    u = uuid.uuid4().hex[:8]
    a, b = f"gw:{{spend}}:20261120:key:{u}", f"gw:{{spend}}:20261120:all:{u}"
    big = 2**60  # beyond a double's exact integers: Redis HINCRBY keeps it
    await store.ledger_add({a: {"m|usd:input": 5, "m|requests": 1}, b: {"m|usd:input": big}}, 60)
    await store.ledger_add({a: {"m|usd:input": 7}, b: {"m|usd:input": 1}}, 60)
    assert await store.ledger_read([a, b, a + "x"]) == [
        {"m|usd:input": 12, "m|requests": 1},
        {"m|usd:input": big + 1},
        {},
    ]


async def test_sessions_live_their_ttl(backend: StateBackend) -> None:
    store = backend.tenants()
    key = f"gw:sess:{uuid.uuid4().hex}"
    assert await store.session_get(key, 60) is None
    await store.session_set(key, "alias#1", 60)
    assert await store.session_get(key, 60) == "alias#1"
    await store.session_set(key, "alias#0", 1)
    await asyncio.sleep(1.2)
    assert await store.session_get(key, 60) is None


async def _until(predicate: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)


async def test_invalidation_messages_reach_every_subscriber(backend: StateBackend) -> None:
    """Two stores of the same Redis (two replicas): a message published by one reaches
    both; each (re)subscription first delivers None."""
    other: Any = None
    if isinstance(backend, RedisBackend):
        url = backend._url + ("?cluster=true" if backend.cluster else "")
        other = RedisBackend(url, timeout=2.0)
        await other.start()
    try:
        got: list[list[str | None]] = [[], []]
        stores = [backend.tenants()] + ([other.tenants()] if other else [])
        for i, s in enumerate(stores):
            await s.start(got[i].append)
        await _until(lambda: all(s.subscribed for s in stores))
        await stores[-1].publish("k:abc")
        await _until(lambda: all("k:abc" in g for g in got[: len(stores)]))
        for g in got[: len(stores)]:
            assert g[-1] == "k:abc"
            if other is not None:
                assert g[0] is None
    finally:
        if other is not None:
            await other.aclose()
