"""Metrics on METRICS_PORT (one listener aggregating every worker) and JSON access logs:
the documented names exist, labels are bounded, and no prompt text or key shows up."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.config import RetryPolicy
from tests.conftest import GatewayFactory
from tests.harness import (
    PROVIDER_KEY,
    SPEEDUPS,
    FakeUpstream,
    GatewayProc,
    metric_sum,
    parse_metrics,
)

pytestmark = pytest.mark.e2e

URL = "/v1/chat/completions"
REQUIRED = (
    "http_requests_total",
    "http_request_duration_seconds",
    "llm_provider_requests_total",
    "llm_provider_errors_total",
    "llm_provider_latency_seconds",
    "llm_tokens_total",
    "llm_time_to_first_token_seconds",
    "gateway_speedups_info",
)
ROUTES = {
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/health",
    "/health/live",
    "/health/ready",
    "unmatched",
}


def secret_prompt() -> str:
    return f"my private prompt {uuid.uuid4().hex}"


def exercise(client: openai.OpenAI, text: str) -> dict[str, int]:
    """A plain chat, a stream with usage, an embedding and an upstream error, all carrying
    ``text`` in their content; the tokens the answers reported, per model and kind."""
    plain = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": text}]
    )
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    embedding = client.embeddings.create(model="embed", input=text)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="openai/fake-500", messages=[{"role": "user", "content": text}]
        )
    streamed = chunks[-1].usage
    assert plain.usage is not None and streamed is not None
    return {
        "chat/prompt": plain.usage.prompt_tokens + streamed.prompt_tokens,
        "chat/completion": plain.usage.completion_tokens + streamed.completion_tokens,
        "embed/prompt": embedding.usage.prompt_tokens,
    }


ATTEMPTS = RetryPolicy().attempts
# (name, labels) -> how much one exercise() moves it, or a key of the tokens it returns.
MOVES: list[tuple[str, dict[str, str], int | str]] = [
    ("http_requests_total", {"route": URL, "status": "200"}, 2),
    ("http_requests_total", {"route": URL, "status": "502"}, 1),
    ("http_request_duration_seconds_count", {"route": URL}, 3),
    ("llm_provider_requests_total", {"model": "chat", "outcome": "success"}, 2),
    # a 500 is retried: every attempt of the default policy fails
    ("llm_provider_errors_total", {"model": "openai/fake-500", "kind": "status_5xx"}, ATTEMPTS),
    ("llm_provider_latency_seconds_count", {"model": "chat"}, 2),
    ("llm_time_to_first_token_seconds_count", {"model": "chat"}, 1),
    ("llm_tokens_total", {"model": "chat", "kind": "prompt"}, "chat/prompt"),
    ("llm_tokens_total", {"model": "chat", "kind": "completion"}, "chat/completion"),
    ("llm_tokens_total", {"model": "embed", "kind": "prompt"}, "embed/prompt"),
]


def test_metrics_exposed_with_bounded_labels(
    client: openai.OpenAI, gateway_proc: GatewayProc
) -> None:
    text = secret_prompt()
    before = gateway_proc.metrics()
    tokens = exercise(client, text)
    metrics = gateway_proc.metrics()

    for name in REQUIRED:
        assert re.search(rf"^# TYPE {name} (counter|histogram|gauge)$", metrics, re.M), name
        assert re.search(rf"^# HELP {name} \S", metrics, re.M), name

    samples = parse_metrics(metrics)
    assert text not in metrics and text.split()[-1] not in metrics
    assert PROVIDER_KEY not in metrics
    for _name, labels, _value in samples:
        if "route" in labels:
            assert labels["route"] in ROUTES, labels
        if "status" in labels:
            assert re.fullmatch(r"[1-5](\d\d|xx)", labels["status"]), labels

    moved = {
        (name, *labels.values()): metric_sum(metrics, name, **labels)
        - metric_sum(before, name, **labels)
        for name, labels, _ in MOVES
    }
    want = {
        (name, *labels.values()): tokens[by] if isinstance(by, str) else by
        for name, labels, by in MOVES
    }
    assert moved == want
    assert all(tokens.values())

    health = httpx.get(gateway_proc.url + "/health", timeout=5).json()
    speedups = {
        labels["kernel"]: labels["implementation"]
        for name, labels, value in samples
        if name == "gateway_speedups_info" and value == 1
    }
    assert speedups == health["speedups"] == SPEEDUPS


def test_rate_limit_metric_is_declared(gateway_proc: GatewayProc) -> None:
    assert "# TYPE llm_rate_limit_exceeded_total counter" in gateway_proc.metrics()


def test_metrics_sum_across_two_workers(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    """Requests served by either worker all add up on the one /metrics listener."""
    mp_dir = tmp_path / "multiproc"
    gw = gateway_factory({"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}, workers=2, name="gateway-2w")
    try:
        body = {"model": "mock-1", "messages": [{"role": "user", "content": "count me"}]}

        def one(_: int) -> int:
            # a fresh connection each time, so the kernel may hand it to either worker
            return httpx.post(gw.url + URL, json=body, timeout=10).status_code

        def serving_pids() -> set[str]:
            return {
                m.group(1)
                for f in os.listdir(mp_dir)
                if (m := re.fullmatch(r"counter_(\d+)\.db", f))
            }

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while sent < 20 or (len(serving_pids()) < 2 and sent < 200):
                statuses = list(pool.map(one, range(10)))
                assert statuses == [200] * 10
                sent += 10
        metrics = gw.metrics()
        assert metric_sum(metrics, "http_requests_total", route=URL) == sent
        assert metric_sum(metrics, "http_requests_total", route=URL, status="200") == sent
        assert metric_sum(metrics, "llm_provider_requests_total", outcome="success") == sent
        assert metric_sum(metrics, "http_request_duration_seconds_count", route=URL) == sent
        # a max-mode gauge does not add up across workers
        assert all(v == 1 for n, _l, v in parse_metrics(metrics) if n == "gateway_speedups_info")
        assert len(serving_pids()) == 2, f"only one worker served {sent} requests"
    finally:
        gw.stop()


# -- logs ----------------------------------------------------------------------------------


def test_access_log_lines(
    client: openai.OpenAI, http: httpx.Client, gateway_proc: GatewayProc
) -> None:
    text = secret_prompt()
    rid_ok, rid_stream, rid_err = (f"log-{k}-{uuid.uuid4().hex[:8]}" for k in ("ok", "st", "err"))
    msg = [{"role": "user", "content": text}]
    sent = time.perf_counter()
    r = http.post(URL, json={"model": "chat", "messages": msg}, headers={"x-request-id": rid_ok})
    round_trip_ms = (time.perf_counter() - sent) * 1000
    assert r.status_code == 200
    with http.stream(
        "POST",
        URL,
        json={"model": "demo", "messages": msg, "stream": True},
        headers={"x-request-id": rid_stream},
    ) as r:
        r.read()
    assert (
        http.post(
            URL,
            json={"model": "openai/fake-429", "messages": msg},
            headers={"x-request-id": rid_err},
        ).status_code
        == 429
    )

    ok = gateway_proc.wait_for_access(rid_ok)
    assert {k: ok[k] for k in ("method", "route", "status", "model", "provider")} == {
        "method": "POST",
        "route": URL,
        "status": 200,
        "model": "chat",
        "provider": "openai",
    }
    # the gateway's own time for the request: within the client's round trip
    assert 0 < ok["duration_ms"] <= round_trip_ms
    assert ok["level"] == "info" and isinstance(ok["ts"], (int, float))
    assert "error" not in ok

    st = gateway_proc.wait_for_access(rid_stream)
    assert (st["status"], st["model"], st["provider"]) == (200, "demo", "mock")
    assert st["duration_ms"] >= 5  # the mock's configured latency, the whole stream included

    err = gateway_proc.wait_for_access(rid_err)
    assert (err["status"], err["provider"], err["error"]) == (429, "openai", "rate_limit_exceeded")

    for rid in (rid_ok, rid_stream, rid_err):
        assert len(gateway_proc.access_lines(rid)) == 1

    out = gateway_proc.proc.stdout() + gateway_proc.proc.stderr()
    assert text not in out and text.split()[-1] not in out
    assert PROVIDER_KEY not in out
    assert "Traceback" not in out


def test_gateway_log_lines_are_json(gateway_proc: GatewayProc) -> None:
    ours = [line for line in gateway_proc.log_lines() if line.startswith("{")]
    assert ours
    for line in ours:
        obj = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(obj), obj
    started = [o for o in gateway_proc.json_logs() if o["msg"] == "gateway started"]
    assert started and started[0]["providers"] == ["mock", "openai"]


def test_every_stdout_line_is_json(gateway_proc: GatewayProc) -> None:
    lines = [line for line in gateway_proc.log_lines() if line.strip()]
    assert lines
    for line in lines:
        json.loads(line)


# -- a fresh gateway: every knowable series exists before the first request ---------------

FRESH_CONFIG = """\
models:
  - alias: primary
    fallbacks: [backup]
    cache: {ttl: 30}
    deployments:
      - {provider: openai, model: fake-echo}
      - {provider: mock, model: mock-1}
  - alias: backup
    deployments: [{provider: mock, model: mock-2}]
"""


def labelsets(samples: list[tuple[str, dict[str, str], float]], name: str) -> set[tuple[Any, ...]]:
    return {tuple(sorted(ls.items())) for n, ls, _v in samples if n == name}


def has(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> bool:
    """A sample of ``name`` with these labels exists (zero is fine: it is declared)."""
    return any(
        n == name and all(ls.get(k) == v for k, v in labels.items()) for n, ls, _v in samples
    )


def test_fresh_gateway_declares_every_knowable_series(
    gateway_factory: GatewayFactory, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "fresh.yaml"
    path.write_text(FRESH_CONFIG)
    gw = gateway_factory(
        {
            "GATEWAY_CONFIG": str(path),
            "OPENAI_API_KEY": PROVIDER_KEY,
            "OPENAI_BASE_URL": fake_upstream.url,
        },
        name="gateway-fresh",
    )
    try:
        samples = parse_metrics(gw.metrics())
    finally:
        gw.stop()
    pairs = [("openai", "primary"), ("mock", "primary"), ("mock", "backup")]
    pairs += [("openai", "other"), ("mock", "other")]  # the ad-hoc overflow label
    for provider, model in pairs:
        pm = {"provider": provider, "model": model}
        for outcome in ("success", "error", "cancelled"):
            assert has(samples, "llm_provider_requests_total", outcome=outcome, **pm), pm
        for kind in ("timeout", "rate_limited", "status_4xx", "status_5xx", "stream"):
            assert has(samples, "llm_provider_errors_total", kind=kind, **pm), (kind, pm)
        for kind in ("prompt", "completion", "cached", "reasoning"):
            assert has(samples, "llm_tokens_total", kind=kind, **pm), (kind, pm)
        for name in (
            "llm_provider_latency_seconds_count",
            "llm_time_to_first_token_seconds_count",
            "llm_upstream_attempts_total",
            "llm_retries_total",
            "llm_hedges_total",
            "llm_breaker_ejections_total",
            "llm_breaker_state",
        ):
            assert has(samples, name, **pm), (name, pm)
    for alias in ("primary", "backup"):
        for reason in ("exhausted", "context_length"):
            assert has(samples, "llm_fallbacks_total", model=alias, reason=reason)
        assert has(samples, "llm_retry_budget_exhausted_total", model=alias)
    for result in ("hit", "miss", "bypass", "error"):
        assert has(samples, "llm_cache_requests_total", model="primary", result=result)
    assert has(samples, "llm_cache_coalesced_total", model="primary", scope="process")
    assert has(samples, "llm_cache_tokens_saved_total", model="primary", kind="prompt")
    assert labelsets(samples, "llm_rate_limit_exceeded_total") == {
        (("scope", s),) for s in ("deployment", "key", "model")
    }
    for route in (URL, "/v1/embeddings", "/v1/messages"):
        for status in ("200", "499", "500"):
            assert has(samples, "http_requests_total", route=route, status=status, method="POST")
    # the in-process state backend is up, not 0
    up = [v for n, _ls, v in samples if n == "gateway_state_backend_up"]
    assert up == [1.0], up
    # declared, not counted: every counter is still zero
    assert all(
        v == 0 for n, _ls, v in samples if n.endswith("_total") and n != "http_requests_total"
    )


def test_fresh_mock_only_gateway_has_the_provider_families(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory({}, name="gateway-fresh-mock")
    try:
        text = gw.metrics()
    finally:
        gw.stop()
    for name in ("llm_provider_errors_total", "llm_provider_requests_total", "llm_tokens_total"):
        assert re.search(rf"^# TYPE {name} counter$", text, re.M), name
    assert metric_sum(text, "gateway_state_backend_up") == 1
