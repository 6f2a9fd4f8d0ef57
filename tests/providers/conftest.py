"""End-to-end fixtures for the provider adapters: one fake upstream per provider wire
format on loopback, and one gateway process with every provider enabled against them.

Built on ``tests/harness.py`` (ports, process groups that are always stopped) and the
session fixtures in ``tests/conftest.py`` (``e2e_dir``, the fake OpenAI upstream).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PROVIDER_KEY, Fake, FakeUpstream, GatewayProc, start_fake, start_gateway

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


def session_fake(provider: str) -> Any:
    """A session fixture ``<provider>_fake``: the provider's fake upstream, with its key."""

    @pytest.fixture(scope="session", name=f"{provider}_fake")
    def fixture(e2e_dir: Path) -> Iterator[Fake]:
        with start_fake(f"{provider}_upstream", e2e_dir / "logs", KEYS[provider]) as fake:
            yield fake

    return fixture


gemini_fake = session_fake("gemini")
azure_fake = session_fake("azure")


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
    with start_gateway(
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
    ) as gw:
        yield gw


@pytest.fixture
def oai(providers_gateway: GatewayProc) -> Iterator[Any]:
    with providers_gateway.openai("client-key", timeout=20) as c:
        yield c


@pytest.fixture
def claude(providers_gateway: GatewayProc) -> Iterator[Any]:
    with providers_gateway.anthropic("client-key", timeout=20) as c:
        yield c
