"""Rate limiter (stage 2 + settle): what it adds to a request, on memory and on Redis.

A request here meets six buckets (RPM and TPM for its key, its model alias and its
deployment), none near its limit, with a ~1 KiB chat body whose prompt tokens are
counted exactly:

* ``reserve``: ``Limiter.reserve()`` as the controller calls it (plan, token count,
  one atomic reservation): the latency the limiter adds before the upstream call.
  On Redis this is one ``EVALSHA`` round trip.
* ``reserve+settle``: that plus settling to a smaller real usage (on Redis the
  settle is a second script call, made in the background after the answer; here it
  is awaited so its cost shows).
* ``loop-noop``: driving one coroutine through the event loop, to subtract.

Redis is a local ``redis-server`` on loopback shared with the tests (``bench/conftest.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.pipeline.auth import Keyring
from gateway.pipeline.ratelimit import Limiter
from gateway.providers.registry import Registry
from gateway.settings import Settings
from gateway.store.memory import MemoryBackend
from gateway.store.redis import RedisBackend
from gateway.wire.chat import Usage
from tests.contexts import context_for

CONFIG = {
    "models": [
        {
            "alias": "bench",
            "limits": {"rpm": 10**9, "tpm": 10**11},
            "deployments": [
                {"provider": "mock", "model": "mock-1", "limits": {"rpm": 10**9, "tpm": 10**11}}
            ],
        }
    ],
    "limits": {"default_key": {"rpm": 10**9, "tpm": 10**11}},
}
TEXT = "Summarise the following paragraph in one sentence, please. " * 14
BODY = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": TEXT},
    ],
    "max_tokens": 256,
}
USAGE = Usage(prompt_tokens=150, completion_tokens=40, total_tokens=190)


def _limiter(store: Any) -> tuple[Limiter, Any, Any, Any]:
    config = parse_config(CONFIG)
    settings = Settings(config=config, providers=Settings.from_env({}).providers)
    registry = Registry(settings)
    group = registry.resolve("bench")
    principal = Keyring(config).principal({"authorization": "Bearer sk-bench"})
    return Limiter(config, registry, store), principal, group, group.deployments[0]


@pytest.fixture(scope="module", params=["memory", "redis"])
def setup(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    if request.param == "memory":
        store: Any = MemoryBackend()
    else:
        store = RedisBackend(request.getfixturevalue("redis_server").url, timeout=1.0)
        loop.run_until_complete(store.start())
    try:
        yield _limiter(store)
    finally:
        loop.run_until_complete(store.aclose())


@pytest.mark.benchmark(group="state")
def test_state_reserve(benchmark: Any, setup: Any, loop: asyncio.AbstractEventLoop) -> None:
    limiter, principal, group, dep = setup

    async def once() -> Any:
        return await limiter.reserve(context_for(BODY, principal=principal, group=group, dep=dep))

    lease = benchmark(lambda: loop.run_until_complete(once()))
    assert "x-ratelimit-remaining-tokens" in lease.headers


@pytest.mark.benchmark(group="state")
def test_state_reserve_and_settle(
    benchmark: Any, setup: Any, loop: asyncio.AbstractEventLoop
) -> None:
    limiter, principal, group, dep = setup

    async def once() -> None:
        ctx = context_for(BODY, principal=principal, group=group, dep=dep)
        lease = await limiter.reserve(ctx)
        lease.settle(USAGE)
        tasks = getattr(limiter.store, "_tasks", None)
        if tasks:  # Redis: the background settle, awaited here to count it
            await asyncio.gather(*tasks)

    benchmark(lambda: loop.run_until_complete(once()))


@pytest.mark.benchmark(group="state")
def test_state_loop_noop(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    async def once() -> None:
        return None

    benchmark(lambda: loop.run_until_complete(once()))
