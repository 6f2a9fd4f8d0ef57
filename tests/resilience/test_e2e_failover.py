"""End to end over real sockets (the openai SDK -> a gateway process -> the fault upstream):
429s with only reset headers, hanging primaries, and a recovered primary brought back by
the active health check. Defaults are scaled down only where a test must be fast."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from gateway.pipeline.probes import RESULTS
from tests.harness import GatewayProc, metric_sum, parse_metrics, start_gateway, wait_until
from tests.resilience.helpers import Fault

pytestmark = pytest.mark.e2e
FULL = "w0 w1 w2 w3 w4 "
MSGS = [{"role": "user", "content": "hello"}]

CONFIG = """\
routing:
  retry: {{attempts: 3, backoff: 0.05, max_backoff: 1.0}}
  breaker: {{consecutive_failures: 2, ejection: 30}}
  health_check: {{interval: 0.2, timeout: 0.5}}
models:
  - alias: limited
    deployments: [{{provider: openai, model: fault-429-oai-20s-6m0s, base_url: "{url}"}}]
  - alias: limited-ant
    deployments: [{{provider: anthropic, model: fault-429-ant-30-300, base_url: "{root}"}}]
  - alias: spread
    strategy: priority
    deployments:
      - {{provider: openai, model: fault-429-oai-20s-6m0s, base_url: "{url}"}}
      - {{provider: openai, model: fault-ok, base_url: "{url}", priority: 1}}
  - alias: hung
    fallbacks: [backup]
    deployments:
      - {{provider: openai, model: fault-hang, base_url: "{url}",
          timeout: {{first_token: 0.5, read: 0.5}}}}
  - alias: backup
    deployments: [{{provider: openai, model: fault-ok, base_url: "{url}"}}]
  - alias: recovers
    strategy: priority
    deployments:
      - {{provider: openai, model: fault-dyn-e2e-hc, base_url: "{url}"}}
      - {{provider: openai, model: fault-ok, base_url: "{url}", priority: 1}}
"""


@pytest.fixture(scope="module")
def gw(fault_upstream: Fault, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProc]:
    tmp = tmp_path_factory.mktemp("res-failover")
    path = tmp / "failover.yaml"
    path.write_text(CONFIG.format(url=fault_upstream.url, root=fault_upstream.root))
    with start_gateway(tmp / "logs", {"GATEWAY_CONFIG": str(path)}, name="gateway-failover") as g:
        yield g


@pytest.fixture
def client(gw: GatewayProc) -> Iterator[openai.OpenAI]:
    with gw.openai(timeout=15) as c:
        yield c


def test_health_check_series_exist_from_start_up(gw: GatewayProc) -> None:
    found = {
        (labels["model"], labels["result"]): value
        for name, labels, value in parse_metrics(gw.metrics())
        if name == "llm_health_checks_total" and labels.get("provider") == "openai"
    }
    # every watched deployment (aliases of two or more), every result, before any traffic
    assert found == {(m, r): 0.0 for m in ("spread", "recovers") for r in RESULTS}


def test_429_reset_headers_give_the_client_retry_after(client: openai.OpenAI, fault: Fault) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="limited", messages=MSGS)
    h = exc.value.response.headers
    assert h["retry-after"] == "20" and h["retry-after-ms"] == "20000"
    assert h["x-gateway-attempts"] == "1"
    assert fault.count("fault-429-oai-20s-6m0s") == 1
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="limited-ant", messages=MSGS)
    h = exc.value.response.headers
    assert 28 <= int(h["retry-after"]) <= 30 and 28_000 <= int(h["retry-after-ms"]) <= 30_000
    assert fault.count("fault-429-ant-30-300") == 1


def test_429_reset_headers_fail_over_to_another_deployment(
    client: openai.OpenAI, fault: Fault
) -> None:
    attempts = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="spread", messages=MSGS)
        assert raw.parse().choices[0].message.content == FULL
        attempts.append(raw.headers["x-gateway-attempts"])
    assert attempts == ["2", "1", "1"]  # the rate-limited deployment is left alone
    assert fault.count("fault-429-oai-20s-6m0s") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_hanging_primary_fails_over_to_the_fallback(
    client: openai.OpenAI, fault: Fault, stream: bool
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="hung", messages=MSGS, stream=stream
    )
    assert raw.headers["x-gateway-attempts"] == "2"
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content
    assert text == FULL
    assert fault.count("fault-hang") == 1  # never repeated on the hung deployment


def test_a_recovered_primary_is_back_thanks_to_the_health_check(
    client: openai.OpenAI, gw: GatewayProc, fault: Fault
) -> None:
    primary = "fault-dyn-e2e-hc"
    fault.behave(primary, "fault-503")
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="recovers", messages=MSGS)
        assert raw.headers["x-gateway-attempts"] == "2"
    raw = client.chat.completions.with_raw_response.create(model="recovers", messages=MSGS)
    assert raw.headers["x-gateway-attempts"] == "1" and fault.count(primary) == 2  # ejected
    assert wait_until(lambda: fault.count(f"probe:{primary}") >= 1, timeout=5)
    fault.behave(primary, None)  # it recovered; the ejection has 30 s to run
    recovered = time.monotonic()

    def back() -> bool:
        client.chat.completions.create(model="recovers", messages=MSGS)
        return fault.count(primary) > 2

    assert wait_until(back, timeout=5)
    assert time.monotonic() - recovered < 10  # seconds, not the rest of the ejection
    text = gw.metrics()
    labels = {"provider": "openai", "model": "recovers"}
    assert metric_sum(text, "llm_health_checks_total", result="fail", **labels) >= 1
    assert metric_sum(text, "llm_health_checks_total", result="pass", **labels) >= 1
    assert metric_sum(text, "llm_breaker_state", **labels) == 0
