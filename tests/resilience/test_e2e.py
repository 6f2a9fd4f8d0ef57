"""End to end over real sockets: the openai SDK -> a gateway process -> the fault upstream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.harness import GatewayProc, metric_sum, start_gateway, wait_until
from tests.resilience.helpers import Fault

pytestmark = pytest.mark.e2e
FULL = "w0 w1 w2 w3 w4 "
MSGS = [{"role": "user", "content": "hello"}]

CONFIG = """\
routing:
  retry: {{attempts: 3, backoff: 0.05, max_backoff: 1.0}}
  breaker: {{consecutive_failures: 2, ejection: 30}}
  stream_keepalive: {keepalive}
models:
  - alias: retry
    strategy: priority
    deployments:
      - {{provider: openai, model: fault-503, base_url: "{url}"}}
      - {{provider: openai, model: fault-ok, base_url: "{url}", priority: 1}}
  - alias: stall
    strategy: priority
    deployments:
      - {{provider: openai, model: fault-stallbody-3s, base_url: "{url}",
          timeout: {{first_token: 0.3}}}}
      - {{provider: openai, model: fault-ok, base_url: "{url}", priority: 1}}
  - alias: cut
    deployments: [{{provider: openai, model: fault-cut-3, base_url: "{url}"}}]
  - alias: limited
    deployments: [{{provider: openai, model: fault-429-ra7, base_url: "{url}"}}]
  - alias: small
    context_fallback: big
    deployments: [{{provider: openai, model: fault-context, base_url: "{url}"}}]
  - alias: big
    deployments: [{{provider: openai, model: fault-ok, base_url: "{url}"}}]
  - alias: brk
    strategy: priority
    deployments:
      - {{provider: openai, model: fault-dyn-e2e, base_url: "{url}"}}
      - {{provider: openai, model: fault-ok, base_url: "{url}", priority: 1}}
  - alias: hedged
    strategy: priority
    hedge: {{delay_ms: 200}}
    deployments:
      - {{provider: openai, model: fault-stall-3s, base_url: "{url}"}}
      - {{provider: openai, model: fault-ok, base_url: "{url}", priority: 1}}
  - alias: embed
    deployments: [{{provider: openai, model: fault-flaky-1, base_url: "{url}"}}]
  - alias: late
    deployments: [{{provider: openai, model: fault-stallbody-0.9s, base_url: "{url}"}}]
  - alias: never
    retry: {{attempts: 1}}
    deployments:
      - {{provider: openai, model: fault-stallbody-5s, base_url: "{url}",
          timeout: {{first_token: 0.7}}}}
"""


def _gateway(tmp: Path, fault: Fault, keepalive: float, name: str) -> GatewayProc:
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(url=fault.url, keepalive=keepalive))
    return start_gateway(tmp / "logs", {"GATEWAY_CONFIG": str(path)}, name=name)


@pytest.fixture(scope="module")
def gw(fault_upstream: Fault, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProc]:
    with _gateway(tmp_path_factory.mktemp("res-e2e"), fault_upstream, 0, "gateway-resilience") as g:
        yield g


@pytest.fixture(scope="module")
def gw_keepalive(
    fault_upstream: Fault, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProc]:
    with _gateway(tmp_path_factory.mktemp("res-ka"), fault_upstream, 0.2, "gateway-keepalive") as g:
        yield g


@pytest.fixture
def client(gw: GatewayProc) -> Iterator[openai.OpenAI]:
    with gw.openai(timeout=15) as c:
        yield c


def test_retry_is_invisible_to_the_client(client: openai.OpenAI, fault: Fault) -> None:
    raw = client.chat.completions.with_raw_response.create(model="retry", messages=MSGS)
    assert raw.headers["x-gateway-attempts"] == "2"
    assert raw.headers["x-gateway-provider"] == "openai"
    assert raw.parse().choices[0].message.content == FULL
    assert (fault.count("fault-503"), fault.count("fault-ok")) == (1, 1)


def test_stream_retried_before_its_first_token(client: openai.OpenAI, fault: Fault) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="stall", messages=MSGS, stream=True
    )
    assert raw.headers["x-gateway-attempts"] == "2"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == FULL


def test_cut_stream_is_an_error_event_without_done(
    client: openai.OpenAI, gw: GatewayProc, fault: Fault
) -> None:
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="cut", messages=MSGS, stream=True):
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text == "w0 w1 w2 "
    with httpx.stream(
        "POST",
        gw.api + "/chat/completions",
        json={"model": "cut", "messages": MSGS, "stream": True},
    ) as r:
        assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "1"
        body = r.read()
    events = [e for e in body.split(b"\n\n") if e.strip()]
    assert b"[DONE]" not in body
    assert sum(b'"error"' in e for e in events) == 1 and b'"error"' in events[-1]
    assert fault.count("fault-cut-3") == 2  # one per request: never retried


def test_long_retry_after_returns_the_429(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="limited", messages=MSGS)
    h = exc.value.response.headers
    assert h["retry-after"] == "7" and h["x-gateway-attempts"] == "1"


def test_context_length_fallback(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="small", messages=MSGS)
    assert raw.headers["x-gateway-attempts"] == "2"
    assert raw.parse().choices[0].message.content == FULL


def test_hedged_request(client: openai.OpenAI, fault: Fault) -> None:
    t0 = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="hedged", messages=MSGS)
    assert time.monotonic() - t0 < 1.5
    assert raw.headers["x-gateway-attempts"] == "2"
    assert wait_until(lambda: fault.gone("fault-stall-3s") == 1, timeout=3)


def test_embeddings_retry(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="embed", input="x")
    assert raw.headers["x-gateway-attempts"] == "2"


def test_breaker_state_in_health_and_metrics(
    client: openai.OpenAI, gw: GatewayProc, fault: Fault
) -> None:
    fault.behave("fault-dyn-e2e", "fault-500")
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="brk", messages=MSGS)
        assert raw.headers["x-gateway-attempts"] == "2"
    health = httpx.get(gw.url + "/health", timeout=5).json()
    deps = health["routing"]["brk"]["deployments"]
    assert [d["breaker"]["state"] for d in deps] == ["open", "closed"]
    assert deps[0]["breaker"]["ejections"] == 1 and "base_url" not in json.dumps(deps)
    raw = client.chat.completions.with_raw_response.create(model="brk", messages=MSGS)
    assert raw.headers["x-gateway-attempts"] == "1"  # the ejected deployment is skipped
    assert fault.count("fault-dyn-e2e") == 2
    text = gw.metrics()
    assert metric_sum(text, "llm_breaker_state", provider="openai", model="brk") == 2
    assert metric_sum(text, "llm_breaker_ejections_total", provider="openai", model="brk") == 1
    assert metric_sum(text, "llm_retries_total", provider="openai", model="brk") == 2
    assert metric_sum(text, "llm_upstream_attempts_total", provider="openai", model="brk") == 5


def test_keepalives_then_content(gw_keepalive: GatewayProc) -> None:
    body = {"model": "late", "messages": MSGS, "stream": True}
    with httpx.stream("POST", gw_keepalive.api + "/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        raw = r.read()
    first_data = raw.index(b"data: ")
    assert raw.startswith(b": keep-alive\n\n") and raw[:first_data].count(b": keep-alive") >= 2
    assert raw.endswith(b"data: [DONE]\n\n")
    with gw_keepalive.openai() as c:
        chunks = c.chat.completions.create(model="late", messages=MSGS, stream=True)
        assert "".join(x.choices[0].delta.content or "" for x in chunks if x.choices) == FULL


def test_failure_after_keepalive_is_an_error_event(gw_keepalive: GatewayProc) -> None:
    body = {"model": "never", "messages": MSGS, "stream": True}
    with httpx.stream("POST", gw_keepalive.api + "/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200  # committed by the keep-alive
        raw = r.read()
    assert raw.startswith(b": keep-alive\n\n") and b"[DONE]" not in raw
    last = json.loads([e for e in raw.split(b"\n\n") if e.strip()][-1][6:])
    assert last["error"]["code"] == "first_token_timeout"
