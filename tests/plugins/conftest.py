"""A gateway process with the test plugins (``tests/plugins_fixture``) configured from
YAML at several positions, in front of the fake OpenAI and Anthropic upstreams."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.endpoints import Endpoint, gateway_env
from tests.harness import FakeUpstream, GatewayProc

KEY = "sk-plugin-contract-team-a"
MODELS = {"chat": "chat", "embeddings": "embed", "messages": "claude", "count_tokens": "claude"}
PROBE = "tests.plugins_fixture.probe"
PROBED = ("before_parse", "before_auth", "before_route", "after_route", "after_limit")

PROBES = "".join(
    f"  - {{use: '{PROBE}:Probe', at: {at}, options: {{tag: {at}}}}}\n" for at in PROBED
)
CONFIG = f"""\
models:
  - alias: chat
    deployments:
      - {{provider: openai, model: fake-echo}}
  - alias: embed
    deployments:
      - {{provider: openai, model: fake-embed}}
  - alias: claude
    deployments:
      - {{provider: anthropic, model: claude-fake}}
  - alias: hang
    deployments:
      - {{provider: openai, model: fake-hang-stream}}
keys:
  - name: team-a
    key_sha256: {hashlib.sha256(KEY.encode()).hexdigest()}
    limits: {{rpm: 100000, tpm: 100000000}}
plugins:
  - use: gateway.plugins.redact:Redact
    at: before_cache
    options: {{action: block, builtin: [], patterns: {{codename: '(?i)project\\s+falcon'}}}}
  - use: gateway.plugins.redact:Redact
    at: before_cache
    options: {{builtin: [email, us_ssn, credit_card, api_key]}}
{PROBES}\
  - use: {PROBE}:Act
    at: before_route
    timeout: 0.5
    options: {{status: 451, code: probe_denied}}
  - use: {PROBE}:stamp
    at: after_attempts
    options: {{value: v1}}
  - use: {PROBE}:Act
    at: after_attempts
    timeout: 20
    options: {{status: 403, code: late_refusal, header: x-probe-late}}
"""


@pytest.fixture(scope="session")
def plugin_gateway(
    gateway_factory: GatewayFactory,
    e2e_dir: Path,
    fake_upstream: FakeUpstream,
    anthropic_fake: Any,
) -> GatewayProc:
    config = e2e_dir / "plugins.yaml"
    config.write_text(CONFIG)
    return gateway_factory(
        gateway_env(fake_upstream, anthropic_fake, config), name="gateway-plugins"
    )


@pytest.fixture
def post(plugin_gateway: GatewayProc) -> Iterator[Any]:
    """``post(endpoint, text, act=None, **kw)``: one request with the team's key."""
    with httpx.Client(base_url=plugin_gateway.url, timeout=15) as c:

        def send(
            endpoint: Endpoint, text: str, act: str | None = None, arg: str | None = None, **kw: Any
        ) -> httpx.Response:
            headers = endpoint.headers(KEY)
            if act is not None:
                headers["x-probe-act"] = act
            if arg is not None:
                headers["x-probe-arg"] = arg
            body = endpoint.body(MODELS[endpoint.name], text, **kw)
            return c.post(endpoint.path, json=body, headers=headers)

        yield send
