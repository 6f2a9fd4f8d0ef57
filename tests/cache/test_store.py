"""The cache's stores on their own: the in-process LRU and the Redis scripts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from gateway.store.cache import CacheUnavailable, MemoryCacheStore, RedisCacheStore
from tests.harness import closed_port
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

KEY, LOCK = "gw:{t}:cache:abc", "gw:{t}:lock:abc"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- memory ----------------------------------------------------------------------------


def test_memory_ttl() -> None:
    clock = Clock()
    store = MemoryCacheStore(clock=clock)
    store.put("k", b"v", ttl_ms=1500)
    clock.now += 1.4
    assert store.get("k") == b"v"
    clock.now += 0.2
    assert store.get("k") is None
    assert len(store) == 0 and store.bytes == 0


def test_memory_lru_by_count() -> None:
    store = MemoryCacheStore(max_entries=3)
    for k in "abc":
        store.put(k, k.encode(), 60_000)
    assert store.get("a") == b"a"  # a is now the most recent
    store.put("d", b"d", 60_000)
    assert store.get("b") is None  # the least recently used went
    assert [store.get(k) for k in "acd"] == [b"a", b"c", b"d"]


def test_memory_lru_by_bytes() -> None:
    store = MemoryCacheStore(max_bytes=100)
    store.put("a", b"x" * 40, 60_000)
    store.put("b", b"y" * 40, 60_000)
    store.put("c", b"z" * 40, 60_000)
    assert store.get("a") is None and store.bytes == 80
    store.put("huge", b"h" * 101, 60_000)  # larger than the whole cache: not stored
    assert store.get("huge") is None and store.get("c") is not None
    store.put("c", b"small", 60_000)  # replacing an entry accounts for the old size
    assert store.bytes == 45


async def test_memory_lookup_protocol() -> None:
    store = MemoryCacheStore()
    assert await store.lookup(KEY, LOCK, "t1", 1000) == (None, True)
    assert await store.lookup(KEY, LOCK, "t1", 0) == (None, False)
    await store.store(KEY, b"entry", 1000, LOCK, "t1")
    assert await store.lookup(KEY, LOCK, "t2", 1000) == (b"entry", False)


async def test_memory_compact_replaces_only_what_was_read() -> None:
    clock = Clock()
    store = MemoryCacheStore(clock=clock)
    store.put("k", b"frames" * 10, 1500)
    await store.compact("k", b"other", b"json")  # the entry changed since: left alone
    assert store.get("k") == b"frames" * 10
    await store.compact("k", b"frames" * 10, b"json")
    assert store.get("k") == b"json" and store.bytes == 4
    await store.compact("gone", b"json", b"x")  # nothing there: nothing stored
    assert store.get("gone") is None
    clock.now += 1.6  # the TTL is the entry's own, not restarted by the compaction
    assert store.get("k") is None and store.bytes == 0


# -- redis -----------------------------------------------------------------------------


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url, socket_timeout=1)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.mark.redis
async def test_redis_lookup_takes_the_lock_once(client: Redis) -> None:
    store = RedisCacheStore(client, timeout_s=1)
    assert await store.lookup(KEY, LOCK, "leader", 5000) == (None, True)
    assert await store.lookup(KEY, LOCK, "other", 5000) == (None, False)
    assert await store.lookup(KEY, LOCK, "leader", 5000) == (None, True)  # still ours
    assert 0 < await client.pttl(LOCK) <= 5000
    assert await store.lookup(KEY, LOCK, "looker", 0) == (None, False)  # 0: look only


@pytest.mark.redis
async def test_redis_store_sets_ttl_and_releases_only_its_own_lock(client: Redis) -> None:
    store = RedisCacheStore(client, timeout_s=1)
    await store.lookup(KEY, LOCK, "leader", 5000)
    await store.store(KEY, b"\x00binary\xffentry", 1500, LOCK, "someone-else")
    assert await client.get(LOCK) == b"leader"  # not theirs to release
    await store.store(KEY, b"\x00binary\xffentry", 1500, LOCK, "leader")
    assert await client.get(LOCK) is None
    assert 0 < await client.pttl(KEY) <= 1500
    assert await store.lookup(KEY, LOCK, "x", 5000) == (b"\x00binary\xffentry", False)


@pytest.mark.redis
async def test_redis_unlock_is_compare_and_delete(client: Redis) -> None:
    store = RedisCacheStore(client, timeout_s=1)
    await store.lookup(KEY, LOCK, "leader", 5000)
    await store.unlock(LOCK, "other")
    assert await client.get(LOCK) == b"leader"
    await store.unlock(LOCK, "leader")
    assert await client.get(LOCK) is None
    assert await store.lookup(KEY, LOCK, "next", 5000) == (None, True)


@pytest.mark.redis
async def test_redis_compact_keeps_the_ttl_and_replaces_only_what_was_read(
    client: Redis,
) -> None:
    store = RedisCacheStore(client, timeout_s=1)
    await store.store(KEY, b"\x00frames\xff", 5000, LOCK, "")
    await store.compact(KEY, b"something else", b"json")
    assert await client.get(KEY) == b"\x00frames\xff"
    await client.pexpire(KEY, 3000)
    await store.compact(KEY, b"\x00frames\xff", b"json")
    assert await client.get(KEY) == b"json"
    assert 0 < await client.pttl(KEY) <= 3000
    await store.compact("gw:{t}:cache:none", b"x", b"y")  # gone meanwhile: not written
    assert await client.exists("gw:{t}:cache:none") == 0


@pytest.mark.redis
async def test_redis_scripts_reload_after_script_flush(client: Redis) -> None:
    store = RedisCacheStore(client, timeout_s=1)
    await store.store(KEY, b"v", 5000, LOCK, "")
    await client.script_flush()
    assert await store.lookup(KEY, LOCK, "t", 5000) == (b"v", False)
    await client.script_flush()
    await store.unlock(LOCK, "t")
    await client.script_flush()
    await store.store(KEY, b"w", 5000, LOCK, "")
    assert await client.get(KEY) == b"w"


async def test_redis_down_fails_fast_and_cools_down() -> None:
    c = Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=0.5)
    clock = Clock()
    store = RedisCacheStore(c, timeout_s=0.05, cooldown_s=0.5, clock=clock)
    try:
        t0 = time.perf_counter()
        with pytest.raises(CacheUnavailable):
            await store.lookup(KEY, LOCK, "t", 1000)
        assert time.perf_counter() - t0 < 0.5
        assert not store.available
        t0 = time.perf_counter()
        for call in (
            store.lookup(KEY, LOCK, "t", 1000),
            store.store(KEY, b"v", 1000, LOCK, "t"),
            store.unlock(LOCK, "t"),
        ):
            with pytest.raises(CacheUnavailable, match="cooling down"):
                await call
        assert time.perf_counter() - t0 < 0.01  # no network during the cool-down
        clock.now += 0.6
        assert store.available
    finally:
        await c.aclose()


@pytest.mark.redis
async def test_redis_paused_is_bounded_by_the_timeout(own_redis: RedisServer) -> None:
    c: Any = Redis.from_url(own_redis.url, socket_timeout=5)  # the store's bound must win
    store = RedisCacheStore(c, timeout_s=0.05)
    try:
        assert await store.lookup(KEY, LOCK, "t", 1000) == (None, True)
        own_redis.pause()
        try:
            t0 = time.perf_counter()
            with pytest.raises(CacheUnavailable):
                await store.lookup(KEY, LOCK, "t", 1000)
            assert time.perf_counter() - t0 < 0.2
        finally:
            own_redis.resume()
        store._open_until = 0.0  # end the cool-down now
        assert await store.lookup(KEY, LOCK, "t", 1000) == (None, True)
    finally:
        await c.aclose()


@pytest.mark.redis
async def test_store_soon_rides_the_pipe_and_fails_like_it(own_redis: RedisServer) -> None:
    """``store_soon``: the store queued on the auto-pipeline (no task); its future
    answers when Redis does, fails on a silent Redis within the bound, and nothing is
    queued without a pipe or during the cool-down."""
    from gateway.store.autopipe import AutoPipeline

    c: Any = Redis.from_url(own_redis.url)
    pipe = AutoPipeline(c, read_timeout_s=0.2)
    store = RedisCacheStore(c, pipe, timeout_s=0.05)
    try:
        assert RedisCacheStore(c, timeout_s=0.05).store_soon(KEY, b"v", 1000, LOCK, "t") is None
        assert await store.lookup(KEY, LOCK, "t", 1000) == (None, True)
        fut = store.store_soon(KEY, b"entry", 60_000, LOCK, "t")
        assert fut is not None
        with pytest.raises(NoScriptError):  # not loaded yet: the caller's slow way loads it
            await fut
        assert store.available  # NOSCRIPT is not an outage
        await store.store(KEY, b"entry", 60_000, LOCK, "t")
        assert await store.lookup(KEY, LOCK, "t", 1000) == (b"entry", False)
        await c.delete(KEY)
        assert await store.lookup(KEY, LOCK, "t", 1000) == (None, True)
        fut = store.store_soon(KEY, b"entry", 60_000, LOCK, "t")
        assert fut is not None
        await fut
        assert await c.get(KEY) == b"entry" and await c.get(LOCK) is None  # lock released
        own_redis.pause()
        try:
            fut = store.store_soon(KEY, b"other", 60_000, LOCK, "t")
            assert fut is not None
            with pytest.raises(TimeoutError):
                await fut
        finally:
            own_redis.resume()
        assert not store.available  # the failure started the cool-down
        assert store.store_soon(KEY, b"other", 60_000, LOCK, "t") is None
    finally:
        await pipe.aclose()
        await c.aclose()
