"""Fixtures for the tenants' tests (the real Redis servers, standalone and a 3-primary
cluster, come from ``tests/conftest.py``): a gateway factory with a master key, the
fault-injecting upstream, and the admin client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProc, start_gateway
from tests.resilience.helpers import Fault, start_fault_upstream

MASTER = "master-key-for-tenant-tests"
PEPPER = "pepper-for-tenant-tests-0123456789"

# Priced mock deployments (USD per million tokens; the mock's usage is exact), two regions.
CONFIG = """
models:
  - alias: priced
    deployments:
      - {provider: mock, model: mock-eu, region: eu, price: {input: 1000, output: 2000},
         mock: {reply_tokens: 20}}
  - alias: spread
    deployments:
      - {provider: mock, model: mock-a, region: eu, price: {input: 10, output: 10}}
      - {provider: mock, model: mock-b, region: us, price: {input: 10, output: 10}}
  - alias: unpriced
    deployments:
      - {provider: openai, model: my-finetune, base_url: "http://127.0.0.1:9/v1", region: eu}
  - alias: free
    deployments:
      - {provider: mock, model: mock-free, region: us}
"""

GatewayMaker = Callable[..., GatewayProc]


@pytest.fixture(scope="session")
def tenants_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tenants")


@pytest.fixture(scope="module")
def make_gateway(tenants_dir: Path) -> Iterator[GatewayMaker]:
    """``make_gateway(redis_url, config=CONFIG, **env)``: a gateway with the master key and
    the pepper; all stopped at the end of the module."""
    started: list[GatewayProc] = []

    def make(redis_url: str | None, config: str = CONFIG, **env: str) -> GatewayProc:
        path = tenants_dir / f"config-{len(started)}-{abs(hash(config))}.yaml"
        path.write_text(config)
        full: dict[str, str | None] = {
            "GATEWAY_CONFIG": str(path),
            "GATEWAY_MASTER_KEY": MASTER,
            "GATEWAY_KEY_PEPPER": PEPPER,
            **env,
        }
        if redis_url:
            full["REDIS_URL"] = redis_url
        gw = start_gateway(tenants_dir / "logs", full, name=f"gw-tenants{len(started)}")
        started.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in started:
            gw.stop()


@pytest.fixture(scope="session")
def fault(tenants_dir: Path) -> Iterator[Fault]:
    """The fault-injecting upstream (tests/fakes/fault_upstream.py); tests reset it."""
    f = start_fault_upstream(tenants_dir / "fault-logs")
    try:
        yield f
    finally:
        f.proc.stop()


def admin(gw: GatewayProc) -> httpx.Client:
    return httpx.Client(
        base_url=gw.url + "/admin", headers={"authorization": f"Bearer {MASTER}"}, timeout=10
    )


def chat(gw: GatewayProc, secret: str, model: str = "priced", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {secret}"},
        timeout=10,
    )
