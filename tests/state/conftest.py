"""Fixtures for the shared-state tests: the backend factory the contract tests run on
(memory, redis, redis-cluster), over the shared Redis fixtures of ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.redis_server import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """A started state backend of each kind; Redis ones on a flushed database."""
    from gateway.store.memory import MemoryBackend
    from gateway.store.redis import RedisBackend

    kind = request.param
    if kind == "memory":
        yield MemoryBackend()
        return
    server: RedisServer | RedisCluster = request.getfixturevalue(
        "redis_server" if kind == "redis" else "redis_cluster"
    )
    server.flush()
    b = RedisBackend(server.url, timeout=2.0)
    await b.start()
    try:
        yield b
    finally:
        await b.aclose()
