"""The reservation sent with the cache lookup (``RedisBackend.reserve_on_miss``, the script
``ratelimit_reserve_on_miss.lua``) against a real redis-server: it reserves exactly when
the lookup in front of it sends the request upstream, answers as ``reserve`` does then,
goes out in the lookup's write, and ``undo`` gives back whatever it took."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.store import scripts
from gateway.store.base import Bucket
from gateway.store.redis import RedisBackend
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

PERIOD = 60_000_000  # 3 per minute: nothing refills while a test runs


@pytest.fixture
async def b(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_server.url, timeout=2.0)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.aclose()


def _names() -> tuple[Bucket, str, str]:
    tag = uuid.uuid4().hex[:8]
    bucket = Bucket(f"gw:{{rl}}:rl:key:{tag}:r", 3, PERIOD)
    return bucket, f"gw:{{{tag}}}:cache:d", f"gw:{{{tag}}}:lock:d"


async def _remaining(b: RedisBackend, bucket: Bucket) -> int:
    """Tokens left, read by a zero-token reservation (which takes nothing)."""
    res = await b.reserve([bucket], [0])
    return res.takes[0].remaining


async def test_reserves_after_a_miss_that_took_the_lock(
    b: RedisBackend, redis_server: RedisServer
) -> None:
    bucket, entry, lock = _names()
    with redis_server.client() as c:
        c.set(lock, "mine")
    sent = b.reserve_on_miss((entry, lock, "mine"), [bucket], [1])
    assert sent is not None
    res = await b.reservation_on_miss(sent)
    assert res is not None and res.allowed and res.takes[0].remaining == 2
    assert await _remaining(b, bucket) == 2


async def test_reserves_after_a_no_store_miss(b: RedisBackend) -> None:
    bucket, entry, lock = _names()
    sent = b.reserve_on_miss((entry, lock, ""), [bucket], [2])
    assert sent is not None
    res = await b.reservation_on_miss(sent)
    assert res is not None and res.allowed and res.takes[0].remaining == 1


@pytest.mark.parametrize("token", ["mine", ""])
async def test_skips_when_the_entry_is_there(
    b: RedisBackend, redis_server: RedisServer, token: str
) -> None:
    bucket, entry, lock = _names()
    with redis_server.client() as c:
        c.set(entry, b"cached")
        c.set(lock, "mine")
    sent = b.reserve_on_miss((entry, lock, token), [bucket], [1])
    assert sent is not None
    assert await b.reservation_on_miss(sent) is None
    assert await _remaining(b, bucket) == 3


@pytest.mark.parametrize("holder", ["another", None])
async def test_skips_when_the_lock_is_not_ours(
    b: RedisBackend, redis_server: RedisServer, holder: str | None
) -> None:
    """Another request fills the entry (or the lock is gone): this one waits and looks
    again; it reserves later, as usual, only if it goes upstream after all."""
    bucket, entry, lock = _names()
    if holder is not None:
        with redis_server.client() as c:
            c.set(lock, holder)
    sent = b.reserve_on_miss((entry, lock, "mine"), [bucket], [1])
    assert sent is not None
    assert await b.reservation_on_miss(sent) is None
    assert await _remaining(b, bucket) == 3


async def test_a_refusal_answers_like_reserve(b: RedisBackend) -> None:
    bucket, entry, lock = _names()
    assert (await b.reserve([bucket], [3])).allowed
    sent = b.reserve_on_miss((entry, lock, ""), [bucket], [1])
    assert sent is not None
    res = await b.reservation_on_miss(sent)
    assert res is not None and not res.allowed
    assert res.takes[0].retry_after_us > 0


def test_the_script_answers_exactly_as_reserve(redis_server: RedisServer) -> None:
    """With the guard passed, the reply is ratelimit_reserve.lua's for the same state."""
    with redis_server.client() as c:
        for n in (0, 1, 3, 4):
            a, g = (f"gw:{{rl}}:rl:eq:{uuid.uuid4().hex[:8]}:{n}" for _ in range(2))
            args = [1_000_000, 3, PERIOD, n]
            plain = c.eval(scripts.source("ratelimit_reserve"), 1, a, *args)
            guarded = c.eval(
                scripts.source("ratelimit_reserve_on_miss"),
                3,
                g,
                "gw:{x}:cache:none",
                "gw:{x}:lock:none",
                *args,
                "",
            )
            assert plain == guarded and c.get(a) == c.get(g)


async def test_goes_out_in_the_lookups_write(b: RedisBackend, redis_server: RedisServer) -> None:
    """Queued in the same loop turn as the lookup: one read on the server for both."""
    from gateway.store.cache import RedisCacheStore

    bucket, entry, lock = _names()
    store = b.cache_store(2.0)
    assert isinstance(store, RedisCacheStore)
    await b.reserve([bucket], [0])  # connected, the backend's scripts loaded
    await store.lookup(entry + "-warm", lock + "-warm", "tok", 0)  # and the lookup's
    sent: list[Any] = []
    c = redis_server.client()
    c.ping()  # its connection's handshake done before counting
    before = int(c.info("stats")["total_reads_processed"])
    raw, held = await store.lookup(
        entry,
        lock,
        "tok",
        5000,
        lambda: sent.append(b.reserve_on_miss((entry, lock, "tok"), [bucket], [1])),
    )
    assert raw is None and held
    res = await b.reservation_on_miss(sent[0])
    reads = int(c.info("stats")["total_reads_processed"]) - before
    c.close()
    assert res is not None and res.allowed
    assert reads == 2  # the batch, and this INFO's own


async def test_undo_gives_back_requests_and_tokens(b: RedisBackend) -> None:
    bucket, entry, lock = _names()
    tpm = Bucket(bucket.key[:-1] + "t", 1000, PERIOD)
    sent = b.reserve_on_miss((entry, lock, ""), [bucket, tpm], [1, 400])
    assert sent is not None
    b.undo(sent, [bucket, tpm], [1, 400])
    for _ in range(50):  # the refund goes out when the answer is in
        await asyncio.sleep(0.01)
        if await _remaining(b, bucket) == 3:
            break
    res = await b.reserve([bucket, tpm], [0, 0])
    assert [t.remaining for t in res.takes] == [3, 1000]


async def test_undo_of_a_skipped_one_gives_nothing(
    b: RedisBackend, redis_server: RedisServer
) -> None:
    bucket, entry, lock = _names()
    with redis_server.client() as c:
        c.set(entry, b"cached")
    assert (await b.reserve([bucket], [1])).allowed  # 2 left, taken by someone else
    sent = b.reserve_on_miss((entry, lock, ""), [bucket], [1])
    assert sent is not None
    b.undo(sent, [bucket], [1])
    await asyncio.sleep(0.05)
    assert await _remaining(b, bucket) == 2
