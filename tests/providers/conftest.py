"""End-to-end fixtures for the provider adapters: one fake upstream per provider wire
format on loopback, and one gateway process with every provider enabled against them.

Built on ``tests/harness.py`` (ports, process groups that are always stopped) and the
session fixtures in ``tests/conftest.py`` (``e2e_dir``, the fake OpenAI upstream).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import (
    PROVIDER_KEY,
    FakeUpstream,
    GatewayProc,
    Proc,
    clean_env,
    free_port,
    spawn,
    start_gateway,
    wait_until,
)

KEYS = {"anthropic": "ak-test-secret", "gemini": "gk-test-secret", "azure": "az-test-secret"}

PROVIDERS_CONFIG = """\
models:
  - alias: claude
    deployments:
      - {provider: anthropic, model: claude-fake}
  - alias: azure-v1
    deployments:
      - {provider: azure, model: gpt4o-v1-deploy, api_version: v1}
  - alias: gem
    deployments:
      - {provider: gemini, model: gemini-fake}
  - alias: mock-1
    deployments:
      - {provider: mock, model: mock-1}
"""


@dataclass
class Fake:
    """A fake provider upstream process and what it recorded."""

    proc: Proc
    port: int
    key: str

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(self.root + "/_requests", timeout=5).json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.root + "/_reset", timeout=5).raise_for_status()


def _start_fake(module: str, key: str, log_dir: Path) -> Fake:
    port = free_port()
    argv = [sys.executable, "-m", f"tests.fakes.{module}", "--port", str(port), "--key", key]
    proc = spawn(f"{module}-{port}", argv, clean_env(), log_dir)
    fake = Fake(proc, port, key)

    def up() -> bool:
        return proc.alive() and httpx.get(fake.root + "/_requests", timeout=1).status_code == 200

    if not wait_until(up):
        proc.stop()
        raise RuntimeError(f"{module} did not start:\n" + proc.describe())
    return fake


@pytest.fixture(scope="session")
def gemini_fake(e2e_dir: Path) -> Iterator[Fake]:
    fake = _start_fake("gemini_upstream", KEYS["gemini"], e2e_dir / "logs")
    try:
        yield fake
    finally:
        fake.proc.stop()


@pytest.fixture(scope="session")
def azure_fake(e2e_dir: Path) -> Iterator[Fake]:
    fake = _start_fake("azure_upstream", KEYS["azure"], e2e_dir / "logs")
    try:
        yield fake
    finally:
        fake.proc.stop()


@pytest.fixture(scope="session")
def providers_gateway(
    e2e_dir: Path,
    anthropic_fake: Fake,
    gemini_fake: Fake,
    azure_fake: Fake,
    fake_upstream: FakeUpstream,
) -> Iterator[GatewayProc]:
    """A gateway with all four providers enabled, each pointed at its fake."""
    config = e2e_dir / "providers.yaml"
    config.write_text(PROVIDERS_CONFIG)
    gw = start_gateway(
        e2e_dir / "logs",
        {
            "ANTHROPIC_API_KEY": KEYS["anthropic"],
            "ANTHROPIC_BASE_URL": anthropic_fake.root,
            "GOOGLE_API_KEY": KEYS["gemini"],
            "GOOGLE_BASE_URL": gemini_fake.root + "/v1beta",
            "AZURE_API_KEY": KEYS["azure"],
            "AZURE_API_BASE": azure_fake.root,
            "OPENAI_API_KEY": PROVIDER_KEY,
            "OPENAI_BASE_URL": fake_upstream.url,
            "GATEWAY_CONFIG": str(config),
        },
        name="gateway-providers",
    )
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def oai(providers_gateway: GatewayProc) -> Iterator[Any]:
    import openai

    c = openai.OpenAI(
        base_url=providers_gateway.api, api_key="client-key", max_retries=0, timeout=20
    )
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def claude(providers_gateway: GatewayProc) -> Iterator[Any]:
    import anthropic

    c = anthropic.Anthropic(
        base_url=providers_gateway.url, api_key="client-key", max_retries=0, timeout=20
    )
    try:
        yield c
    finally:
        c.close()
