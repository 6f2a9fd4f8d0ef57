"""End-to-end fixtures for ``/v1/responses``: fake upstreams of every wire format on
loopback, and gateways (in-process state, and Redis) whose aliases reach each of them.

Built on ``tests/harness.py``; the OpenAI chat fake is the session's ``fake_upstream``
(``tests/conftest.py``), the Responses fake is ``tests/fakes/responses_upstream.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    PROVIDER_KEY,
    Fake,
    FakeUpstream,
    GatewayProc,
    start_fake,
    start_gateway,
)
from tests.redis_server import RedisServer

KEYS = {
    "anthropic": "ak-resp-secret",
    "gemini": "gk-resp-secret",
    "responses": "rk-resp-secret",
}


@dataclass
class Recorded(Fake):
    def posts(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] == "POST" and r["path"] == path]


@pytest.fixture(scope="session")
def resp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("responses")


@pytest.fixture(scope="session")
def fakes(resp_dir: Path) -> Iterator[dict[str, Recorded]]:
    started: dict[str, Recorded] = {}
    try:
        for name, module in (
            ("anthropic", "anthropic_upstream"),
            ("gemini", "gemini_upstream"),
            ("responses", "responses_upstream"),
        ):
            fake = start_fake(module, resp_dir / "logs", KEYS[name], kind=Recorded)
            assert isinstance(fake, Recorded)
            started[name] = fake
        yield started
    finally:
        for fake in started.values():
            fake.stop()


def config_text(fakes: dict[str, Recorded], chat: FakeUpstream) -> str:
    resp = fakes["responses"].root
    openai_resp = f"{{provider: openai, base_url: '{resp}/v1', api_key_env: RESP_KEY"
    chat_only = (
        f"{{provider: openai, base_url: '{chat.url}', api_key_env: CHAT_KEY, responses: translate"
    )
    azure = f"{{provider: azure, base_url: '{resp}', api_version: v1, api_key_env: AZ_KEY"
    return f"""\
models:
  - alias: gpt
    deployments:
      - {openai_resp}, model: resp-echo}}
  - alias: gpt-stream-failed
    deployments:
      - {openai_resp}, model: resp-stream-failed}}
  - alias: gpt-stream-error
    deployments:
      - {openai_resp}, model: resp-stream-error}}
  - alias: gpt-preamble-error
    strategy: priority
    retry: {{attempts: 2, backoff: 0.01}}
    deployments:
      - {openai_resp}, model: resp-preamble-error, priority: 0}}
      - {{provider: anthropic, model: claude-fake, priority: 1}}
  - alias: azure-resp
    deployments:
      - {azure}, model: resp-echo}}
  - alias: chatonly
    deployments:
      - {chat_only}, model: fake-echo}}
  - alias: chatonly-broken
    deployments:
      - {chat_only}, model: fake-stream-error}}
  - alias: claude
    deployments:
      - {{provider: anthropic, model: claude-fake}}
  - alias: claude-broken
    deployments:
      - {{provider: anthropic, model: claude-stream-error}}
  - alias: gem
    deployments:
      - {{provider: gemini, model: gemini-fake}}
  - alias: mocked
    deployments:
      - {{provider: mock, model: mock-1}}
  - alias: conv
    retry: {{attempts: 1}}
    fallbacks: [claude]
    deployments:
      - {openai_resp}, model: resp-fail-followup}}
  - alias: cached
    cache: {{ttl: 300}}
    deployments:
      - {{provider: anthropic, model: claude-cached}}
  - alias: limited
    limits: {{tpm: 2000}}
    deployments:
      - {{provider: mock, model: mock-1, mock: {{reply_tokens: 8}}}}
plugins:
  - use: gateway.plugins.redact:Redact
    at: before_cache  # after the conversation stage: it must see what the plugin left
    options: {{builtin: [email], endpoints: [responses]}}
"""


def gateway_env(
    fakes: dict[str, Recorded],
    chat: FakeUpstream,
    config: Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str | None]:
    return {
        "ANTHROPIC_API_KEY": KEYS["anthropic"],
        "ANTHROPIC_BASE_URL": fakes["anthropic"].root,
        "GOOGLE_API_KEY": KEYS["gemini"],
        "GOOGLE_BASE_URL": fakes["gemini"].root + "/v1beta",
        "RESP_KEY": KEYS["responses"],
        "AZ_KEY": KEYS["responses"],
        "CHAT_KEY": PROVIDER_KEY,
        "GATEWAY_CONFIG": str(config),
        **(extra or {}),
    }


@pytest.fixture(scope="session")
def resp_config(resp_dir: Path, fakes: dict[str, Recorded], fake_upstream: FakeUpstream) -> Path:
    path = resp_dir / "responses.yaml"
    path.write_text(config_text(fakes, fake_upstream))
    return path


@pytest.fixture(scope="session")
def resp_gateway(
    resp_dir: Path, fakes: dict[str, Recorded], fake_upstream: FakeUpstream, resp_config: Path
) -> Iterator[GatewayProc]:
    """In-process state (no REDIS_URL)."""
    gw = start_gateway(
        resp_dir / "logs",
        gateway_env(fakes, fake_upstream, resp_config),
        name="gateway-responses",
    )
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="session")
def redis_resp_gateway(
    resp_dir: Path,
    fakes: dict[str, Recorded],
    fake_upstream: FakeUpstream,
    resp_config: Path,
    redis_server: RedisServer,
) -> Iterator[tuple[GatewayProc, RedisServer]]:
    """Redis state (the session's redis-server), two workers: a follow-up may land on
    the other one."""
    gw = start_gateway(
        resp_dir / "logs",
        gateway_env(fakes, fake_upstream, resp_config, {"REDIS_URL": redis_server.url}),
        name="gateway-responses-redis",
        workers=2,
    )
    try:
        yield gw, redis_server
    finally:
        gw.stop()


def sdk(gw: GatewayProc, key: str = "tenant-a-key") -> Any:
    return gw.openai(api_key=key, timeout=20)


@pytest.fixture
def client(resp_gateway: GatewayProc) -> Iterator[Any]:
    c = sdk(resp_gateway)
    try:
        yield c
    finally:
        c.close()
