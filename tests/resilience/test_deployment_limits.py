"""A deployment's own limits (``deployments[].limits``) hold when the attempt loop moves to
it: not only the first-choice deployment is reserved, every deployment a request is sent
to is (once), and a refused one is skipped like an ejected one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.harness import closed_port

URL = "/v1/chat/completions"


def config(second_limits: str = "limits: {rpm: 2, rpm_burst: 2}") -> str:
    return f"""
models:
  - alias: pair
    strategy: priority
    retry: {{attempts: 2, backoff: 0.01, max_backoff: 0.01}}
    deployments:
      - provider: openai
        model: gpt-4o-mini
        base_url: http://127.0.0.1:{closed_port()}/v1
        api_key_env: GW_TEST_DEAD_KEY
        priority: 0
      - {{provider: mock, model: mock-1, priority: 1, {second_limits}}}
routing:
  breaker: {{consecutive_failures: 1000}}
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    made: list[TestClient[Any]] = []

    def make(text: str) -> TestClient[Any]:
        path = tmp_path / f"gw{len(made)}.yaml"
        path.write_text(text)
        c = TestClient(
            create_app(
                Settings.from_env({"GATEWAY_CONFIG": str(path), "GW_TEST_DEAD_KEY": "sk-test"})
            )
        )
        c.__enter__()
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.__exit__(None, None, None)
        root.handlers[:] = handlers
        root.setLevel(level)


def chat() -> dict[str, Any]:
    return {"model": "pair", "messages": [{"role": "user", "content": "hello"}]}


def test_second_deployment_limits_hold_after_a_retry(client: Any) -> None:
    c = client(config())
    for _ in range(2):
        r = c.post(URL, json=chat())
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-attempts"] == "2"  # the closed port, then the mock
        assert r.headers["x-gateway-provider"] == "mock"
    r = c.post(URL, json=chat())
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["type"] == "rate_limit_error"
    assert "the deployment of 'pair'" in err["message"]
    assert "2 requests per minute" in err["message"]
    assert int(r.headers["retry-after"]) >= 1


def test_second_deployment_without_limits_is_unchanged(client: Any) -> None:
    c = client(config(second_limits=""))
    for _ in range(4):
        r = c.post(URL, json=chat())
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-attempts"] == "2"


def test_the_second_deployment_reservation_is_settled_to_real_usage(client: Any) -> None:
    c = client(config("mock: {reply_tokens: 1}, limits: {rpm: 100, tpm: 200, tpm_burst: 200}"))
    # prompt + max_tokens 150 fits the 200-token bucket once, unless settled to real usage
    for _ in range(2):
        r = c.post(URL, json={**chat(), "max_tokens": 150})
        assert r.status_code == 200, r.text
    for _ in range(2):
        with c.stream("POST", URL, json={**chat(), "max_tokens": 150, "stream": True}) as r:
            assert r.status_code == 200
            assert b"[DONE]" in r.read()
