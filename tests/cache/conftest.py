"""Fixtures for the response-cache tests: a real ``redis-server`` on a free loopback
port (no persistence), the config with cached aliases, and an in-process app
factory parametrized over the two backends (memory, redis).

The redis-server runs in its own process group through ``tests.harness.spawn``, so
it is stopped at the end of the session whatever happens, and never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.harness import PROVIDER_KEY, FakeUpstream, Proc, clean_env, free_port, spawn, wait_until

CACHE_CONFIG = """\
models:
  - alias: cached
    cache: {ttl: 60}
    deployments:
      - {provider: openai, model: fake-echo}
  - alias: cached-tools
    cache: {ttl: 60}
    deployments:
      - {provider: openai, model: fake-tools}
  - alias: cached-500
    cache: {ttl: 60}
    deployments:
      - {provider: openai, model: fake-500}
  - alias: cached-400
    cache: {ttl: 60}
    deployments:
      - {provider: openai, model: fake-400}
  - alias: cached-cut
    cache: {ttl: 60}
    deployments:
      - {provider: openai, model: fake-cut}
  - alias: cached-embed
    cache: {ttl: 60}
    deployments:
      - {provider: openai, model: fake-embed}
  - alias: short
    cache: {ttl: 1}
    deployments:
      - {provider: openai, model: fake-echo}
  - alias: uncached
    deployments:
      - {provider: openai, model: fake-echo}
  - alias: cached-slow
    cache: {ttl: 60}
    deployments:
      - provider: mock
        model: mock-1
        mock: {latency_ms: 300, reply_tokens: 8}
"""

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- redis-server ------------------------------------------------------------------------


@dataclass
class RedisServer:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def ping(self) -> bool:
        with self.client() as c:
            return bool(c.ping())

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.alive():
            self.resume()  # a stopped process does not act on SIGTERM until continued
        self.proc.stop(grace=2.0)


def start_redis(log_dir: Path, name: str = "redis", port: int | None = None) -> RedisServer:
    """``redis-server`` on a free loopback port (or ``port``, to restart one in place)."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(exe):
        pytest.skip("redis-server is not installed (make system-deps)")
    port = port or free_port()
    argv = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(log_dir),
    ]
    proc = spawn(f"{name}-{port}", argv, clean_env(), log_dir)
    server = RedisServer(proc, port)
    if not wait_until(lambda: proc.alive() and server.ping(), timeout=10):
        proc.stop()
        raise RuntimeError("redis-server did not start:\n" + proc.describe())
    return server


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def redis_server(cache_dir: Path) -> Iterator[RedisServer]:
    server = start_redis(cache_dir / "redis-main", "redis-main")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis(cache_dir: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to pause or kill."""
    server = start_redis(cache_dir / f"redis-{request.node.name[:40]}", "redis-own")
    try:
        yield server
    finally:
        server.stop()


# -- config and in-process apps ------------------------------------------------------------


@pytest.fixture(scope="session")
def cache_config(cache_dir: Path) -> Path:
    path = cache_dir / "cache.yaml"
    path.write_text(CACHE_CONFIG)
    return path


def app_env(cache_config: Path, fake: FakeUpstream, redis_url: str | None) -> dict[str, str]:
    env = {
        "GATEWAY_CONFIG": str(cache_config),
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_BASE_URL": fake.url,
        "LOG_LEVEL": "warning",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


@asynccontextmanager
async def app_client(env: dict[str, str], wrap: Any = None) -> AsyncIterator[httpx.AsyncClient]:
    """``create_app`` under Litestar's AsyncTestClient (lifespan run), optionally with an
    ASGI wrapper around the app (tests use one to play stage 1 and set a tenant)."""
    import logging

    from litestar.testing import AsyncTestClient

    from gateway.app import create_app
    from gateway.settings import Settings

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        app = create_app(Settings.from_env(env))
        if wrap is not None:
            app.asgi_handler = wrap(app.asgi_handler)
        async with AsyncTestClient(app, timeout=20) as client:
            yield client
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def env(
    backend: str, cache_config: Path, fake_upstream: FakeUpstream, request: pytest.FixtureRequest
) -> dict[str, str]:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    return app_env(cache_config, fake_upstream, url)
