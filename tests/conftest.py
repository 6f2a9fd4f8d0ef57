"""Shared fixtures: the fake upstream, the main gateway, a factory for extra gateways,
and the one real Redis (a server and a cluster) every suite uses.

Session-scoped processes start once, when a test first asks for them, and are stopped
at the end of the session whatever happened (fixture teardown, plus an atexit sweep in
``tests.harness``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import (
    PROVIDER_KEY,
    FakeUpstream,
    GatewayProc,
    start_fake_upstream,
    start_gateway,
)
from tests.redis_server import RedisCluster, RedisServer, start_cluster, start_redis

GATEWAY_CONFIG = """\
models:
  - alias: chat
    deployments:
      - {provider: openai, model: fake-echo}
  - alias: tools
    deployments:
      - {provider: openai, model: fake-tools}
  - alias: demo
    deployments:
      - provider: mock
        model: mock-1
        mock: {latency_ms: 5, tokens_per_second: 200, reply_tokens: 12}
  - alias: slow
    deployments:
      - {provider: openai, model: fake-slow, timeout: {read: 0.5}}
  - alias: embed
    deployments:
      - {provider: openai, model: fake-embed}
"""
ALIASES = ("chat", "tools", "demo", "slow", "embed")


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def fake_upstream(e2e_dir: Path) -> Iterator[FakeUpstream]:
    with start_fake_upstream(e2e_dir / "logs") as fake:
        yield fake


def _anthropic_fake() -> Any:
    """The fake Anthropic upstream (``tests/fakes/anthropic_upstream.py``), shared by the
    provider suites, the plugin contract and the endpoint-parity tests."""
    from tests.providers.conftest import session_fake

    return session_fake("anthropic")


anthropic_fake = _anthropic_fake()


@pytest.fixture(scope="session")
def gateway_config(e2e_dir: Path) -> Path:
    path = e2e_dir / "gateway.yaml"
    path.write_text(GATEWAY_CONFIG)
    return path


@pytest.fixture(scope="session")
def gateway_proc(
    e2e_dir: Path, fake_upstream: FakeUpstream, gateway_config: Path
) -> Iterator[GatewayProc]:
    """The main gateway: OpenAI (the fake) plus the config's aliases (mock included)."""
    with start_gateway(
        e2e_dir / "logs",
        {
            "OPENAI_API_KEY": PROVIDER_KEY,
            "OPENAI_BASE_URL": fake_upstream.url,
            "GATEWAY_CONFIG": str(gateway_config),
        },
        name="gateway-main",
    ) as gw:
        yield gw


GatewayFactory = Callable[..., GatewayProc]


@pytest.fixture(scope="session")
def gateway_factory(e2e_dir: Path) -> Iterator[GatewayFactory]:
    """``gateway_factory(env, workers=1, name=..., ready_path=..., ready_statuses=...)``
    starts an extra gateway with exactly ``env`` on top of a clean environment; all of
    them are stopped at the end of the session (or earlier via ``.stop()``)."""
    started: list[GatewayProc] = []

    def make(env: dict[str, str | None], **kw: Any) -> GatewayProc:
        gw = start_gateway(e2e_dir / "logs", env, **kw)
        started.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in started:
            gw.stop()


@pytest.fixture(scope="session")
def mock_gateway(gateway_factory: GatewayFactory) -> GatewayProc:
    """No provider key and no config: only the built-in mock provider."""
    return gateway_factory({}, name="gateway-mock")


@pytest.fixture
def client(gateway_proc: GatewayProc) -> Iterator[Any]:
    with gateway_proc.openai() as c:
        yield c


@pytest.fixture
def http(gateway_proc: GatewayProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_proc.url, timeout=10) as c:
        yield c


# -- Redis -------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="session")
def redis_server(redis_dir: Path) -> Iterator[RedisServer]:
    """The one shared ``redis-server``; a test that needs it empty asks for ``redis_url``
    (or flushes it)."""
    with start_redis(redis_dir / "main", "redis-main") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(redis_dir: Path) -> Iterator[RedisCluster]:
    """A 3-primary Redis Cluster, shared like ``redis_server``."""
    with start_cluster(redis_dir / "cluster") as cluster:
        yield cluster


@pytest.fixture
def own_redis(redis_dir: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own, to pause, kill or restart."""
    with start_redis(redis_dir / f"own-{request.node.name[:40]}", "redis-own") as server:
        yield server
