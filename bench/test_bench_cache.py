"""Response cache (stage 3): what it adds to a request, on the memory and Redis backends.

``stage-*`` run ``ResponseCache.lookup()`` as the controller does (headers, tenant,
cache key over a ~1 KiB chat body, in-flight table, store round trip):

* ``stage-hit``: a lookup that finds the entry (the whole cost of a hit);
* ``stage-miss``: a lookup that misses and takes the fill lock, then the store of a
  ~1 KiB answer (which the real path does off the response path, in a task);
* ``store-*`` the store's own calls, and ``loop-noop`` the cost of driving one
  coroutine through the event loop, to subtract from the others.

Redis is a local ``redis-server`` on loopback shared with the tests (``bench/conftest.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Coroutine, Iterator
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from gateway.config import parse_config
from gateway.pipeline.auth import Principal
from gateway.pipeline.cache import ResponseCache
from gateway.settings import Settings
from gateway.store.cache import MemoryCacheStore, RedisCacheStore
from tests.contexts import context_for

ANSWER = msgspec.json.encode(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "word " * 200, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 200, "total_tokens": 320},
    }
)
GROUP = SimpleNamespace(name="cached", label="cached")
_counter = itertools.count()


def body(n: int) -> dict[str, Any]:
    text = "Summarise the following paragraph in one sentence, please. " * 14
    return {
        "model": "cached",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"{text} #{n}"},
        ],
        "temperature": 0,
    }


def request(body: dict[str, Any]) -> Any:
    """The context stage ``cache`` sees after ``parse`` and ``auth``."""
    return context_for(
        body,
        principal=Principal(tenant="bench", name="bench"),
        group=GROUP,
        headers=[(b"content-type", b"application/json")],
    )


@pytest.fixture(scope="module", params=["memory", "redis"])
def cache(
    request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop
) -> Iterator[ResponseCache]:
    cfg = parse_config(
        {
            "models": [
                {
                    "alias": "cached",
                    "cache": {"ttl": 600},
                    "deployments": [{"provider": "mock", "model": "mock-1"}],
                }
            ]
        }
    )
    rc = ResponseCache(msgspec.structs.replace(Settings.from_env({}), config=cfg))
    client = None
    if request.param == "redis":
        from redis.asyncio import Redis

        url = request.getfixturevalue("redis_server").url
        client = Redis.from_url(url, socket_timeout=1)
        store = RedisCacheStore(client, timeout_s=1.0)  # measure, don't time out
        loop.run_until_complete(rc.start(SimpleNamespace(cache_store=lambda timeout: store)))
    try:
        yield rc
    finally:
        if client is not None:
            loop.run_until_complete(client.aclose())


def run(loop: asyncio.AbstractEventLoop, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return lambda: loop.run_until_complete(fn())


@pytest.mark.benchmark(group="cache")
def test_loop_noop(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    async def noop() -> None:
        return None

    benchmark(run(loop, noop))


@pytest.mark.benchmark(group="cache")
def test_stage_hit(benchmark: Any, loop: asyncio.AbstractEventLoop, cache: ResponseCache) -> None:
    stored = body(-1)

    async def prime() -> None:
        lk = await cache.lookup(request(stored))
        lk.store(ANSWER, "openai")
        await cache.aclose()

    loop.run_until_complete(prime())

    async def hit() -> None:
        lk = await cache.lookup(request(stored))
        assert lk.entry is not None

    benchmark(run(loop, hit))


@pytest.mark.benchmark(group="cache")
def test_stage_miss_and_store(
    benchmark: Any, loop: asyncio.AbstractEventLoop, cache: ResponseCache
) -> None:
    bodies = (body(n) for n in _counter)

    async def miss() -> None:
        lk = await cache.lookup(request(next(bodies)))
        assert lk.status == "MISS"
        lk.store(ANSWER, "openai")
        await cache.aclose()  # wait for the background store: count its round trip too

    benchmark(run(loop, miss))


@pytest.mark.benchmark(group="cache")
@pytest.mark.parametrize("op", ["lookup-miss", "lookup-hit", "store"])
def test_store_ops(
    benchmark: Any, loop: asyncio.AbstractEventLoop, cache: ResponseCache, op: str
) -> None:
    store = cache.store
    assert isinstance(store, (MemoryCacheStore, RedisCacheStore))
    value = b"gwc1 openai 120 200\n" + ANSWER
    loop.run_until_complete(store.store("gw:{b}:cache:hit", value, 600_000, "gw:{b}:lock:hit", ""))
    keys = (f"gw:{{b}}:cache:{os.urandom(8).hex()}" for _ in itertools.count())

    async def lookup_miss() -> None:
        assert (await store.lookup(next(keys), "gw:{b}:lock:x", "tok", 1000))[0] is None

    async def lookup_hit() -> None:
        assert (await store.lookup("gw:{b}:cache:hit", "gw:{b}:lock:hit", "t", 1000))[0]

    async def put() -> None:
        await store.store(next(keys), value, 600_000, "gw:{b}:lock:x", "tok")

    fn = {"lookup-miss": lookup_miss, "lookup-hit": lookup_hit, "store": put}[op]
    benchmark(run(loop, fn))
