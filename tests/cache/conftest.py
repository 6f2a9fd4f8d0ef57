"""Fixtures for the response-cache tests: the config with cached aliases, and an
in-process app factory parametrized over the two backends (memory, and the shared
``redis-server`` of ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import PROVIDER_KEY, FakeUpstream

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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


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
