"""OpenTelemetry over real sockets: a real OTLP/HTTP receiver decodes the spans a real
gateway exports; the upstream records the traceparent it was sent."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.otlp_collector import OtlpCollector, Span
from tests.harness import GatewayProc, closed_port, metric_sum
from tests.ops.conftest import OLD_KEY, OpsUpstream
from tests.ops.helpers import write_config

pytestmark = pytest.mark.e2e

PROMPT = "tracing-canary-prompt-7c1d"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _config(tmp_path: Path, ops: OpsUpstream) -> str:
    def dep(model: str, extra: str = "") -> str:
        return (
            f"      - {{provider: openai, model: {model}, base_url: '{ops.url}', "
            f"api_key_env: OPS_KEY{extra}}}\n"
        )

    text = (
        "models:\n"
        "  - alias: traced\n    deployments:\n" + dep("ops-echo") + "  - alias: flaky\n"
        "    strategy: priority\n    deployments:\n"
        + dep("ops-500", ", priority: 0")
        + dep("ops-echo", ", priority: 1")
        + "  - alias: broken\n    fallbacks: [traced]\n    retry: {attempts: 1}\n"
        "    deployments:\n"
        + dep("ops-500")
        + "  - alias: hedged\n    strategy: priority\n    hedge: {delay_ms: 30}\n"
        "    deployments:\n" + dep("ops-slow", ", priority: 0") + dep("ops-echo", ", priority: 1")
    )
    return write_config(tmp_path / "traced.yaml", text)


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    c = OtlpCollector()
    yield c
    c.close()


@pytest.fixture(scope="module")
def traced_gw(
    gateway_factory: GatewayFactory,
    ops_upstream: OpsUpstream,
    collector: OtlpCollector,
    tmp_path_factory: pytest.TempPathFactory,
) -> GatewayProc:
    env = {
        "GATEWAY_CONFIG": _config(tmp_path_factory.mktemp("traced"), ops_upstream),
        "OPS_KEY": OLD_KEY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": "gateway-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=ops",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    return gateway_factory(env, name="gateway-traced")


def _chat(gw: GatewayProc, model: str, parent: bool = False, **kw: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], **kw}
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"} if parent else {}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=20)


def _by_name(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def _no_content(spans: list[Span]) -> None:
    dumped = json.dumps([s.attributes for s in spans])
    assert PROMPT not in dumped  # prompt (and the echoed completion) never on a span


def test_server_stage_and_attempt_spans(
    traced_gw: GatewayProc, collector: OtlpCollector, ops_upstream: OpsUpstream
) -> None:
    ops_upstream.reset()
    r = _chat(traced_gw, "traced", parent=True, max_tokens=50, temperature=0.5)
    assert r.status_code == 200
    trace_id = r.headers["x-trace-id"]
    assert trace_id == CLIENT_TRACE  # the client's trace is continued
    spans = collector.trace(trace_id, at_least=4)
    names = _by_name(spans)
    (server,) = names["POST /v1/chat/completions"]
    assert server.kind == "server" and server.parent_id == CLIENT_SPAN
    assert server.resource["service.name"] == "gateway-under-test"
    assert server.resource["deployment.environment"] == "test"
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "traced"
    assert a["gen_ai.response.model"] == "ops-echo"
    assert a["gen_ai.provider.name"] == "openai"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (7, 5)
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.5
    assert a["http.response.status_code"] == 200 and a["http.route"] == "/v1/chat/completions"
    assert a["gateway.request_id"] == r.headers["x-request-id"]
    for stage in ("gateway.parse", "gateway.attempts"):
        (s,) = names[stage]
        assert s.parent_id == server.span_id and s.kind == "internal"
    # no alias caches and nothing is limited here: those stages do not run, so no span
    assert "gateway.cache" not in names and "gateway.limit" not in names
    (attempts,) = names["gateway.attempts"]
    (client,) = names["chat ops-echo"]
    assert client.kind == "client" and client.parent_id == attempts.span_id
    assert client.attributes["gen_ai.request.model"] == "ops-echo"
    assert client.attributes["gateway.attempt.reason"] == "first"
    # the upstream request carried the attempt span's traceparent
    (sent,) = [x for x in ops_upstream.requests() if x["path"] == "/v1/chat/completions"]
    assert sent["traceparent"] == f"00-{trace_id}-{client.span_id}-01"
    access = traced_gw.wait_for_access(r.headers["x-request-id"])
    assert access["trace_id"] == trace_id
    _no_content(spans)
    # tracing leaves multiprocess metrics alone (the SDK check runs in the supervisor)
    assert metric_sum(traced_gw.metrics(), "http_requests_total", route="/v1/chat/completions")


def test_retries_and_fallbacks_are_sibling_attempts(
    traced_gw: GatewayProc, collector: OtlpCollector
) -> None:
    for alias, reasons in (("flaky", ["first", "retry"]), ("broken", ["first", "retry"])):
        r = _chat(traced_gw, alias)
        assert r.status_code == 200, r.text
        spans = collector.trace(r.headers["x-trace-id"], at_least=5)
        (attempts,) = _by_name(spans)["gateway.attempts"]
        clients = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start_ns)
        assert [s.attributes["gateway.attempt.reason"] for s in clients] == reasons
        assert all(s.parent_id == attempts.span_id for s in clients)  # siblings
        failed, served = clients
        assert failed.name == "chat ops-500" and failed.status == 2
        assert failed.attributes["http.response.status_code"] == 500
        assert failed.attributes["gateway.attempt.outcome"] == "error"
        assert served.attributes["gateway.attempt.outcome"] == "success"
        if alias == "broken":  # the fallback alias served
            assert served.attributes["gateway.model_alias"] == "traced"
        _no_content(spans)


def test_a_hedge_is_a_sibling_attempt(traced_gw: GatewayProc, collector: OtlpCollector) -> None:
    """The first deployment has no content after 30 ms: a twin goes to the second, which
    answers first; the first is cancelled. Both attempts are children of gateway.attempts."""
    body = {"model": "hedged", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.stream("POST", traced_gw.url + "/v1/chat/completions", json=body) as r:
        trace_id = r.headers["x-trace-id"]
        assert r.read().decode().endswith("data: [DONE]\n\n")
    spans = collector.trace(trace_id, at_least=5)
    (attempts,) = _by_name(spans)["gateway.attempts"]
    clients = {s.attributes["gateway.attempt.reason"]: s for s in spans if s.kind == "client"}
    assert set(clients) == {"first", "hedge"}
    assert all(s.parent_id == attempts.span_id for s in clients.values())
    assert clients["first"].name == "chat ops-slow"
    assert clients["first"].attributes["gateway.attempt.outcome"] == "cancelled"
    assert clients["hedge"].attributes["gateway.attempt.outcome"] == "success"


def test_a_stream_span_lasts_to_its_end(traced_gw: GatewayProc, collector: OtlpCollector) -> None:
    body = {"model": "traced", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.stream("POST", traced_gw.url + "/v1/chat/completions", json=body) as r:
        trace_id = r.headers["x-trace-id"]
        text = r.read().decode()
    assert text.endswith("data: [DONE]\n\n")
    spans = collector.trace(trace_id, at_least=4)
    (server,) = _by_name(spans)["POST /v1/chat/completions"]
    assert server.attributes["gen_ai.request.stream"] is True
    assert server.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    (client,) = [s for s in spans if s.kind == "client"]
    assert client.end_ns <= server.end_ns
    _no_content(spans)


def test_untraced_gateway_has_no_trace_id(mock_gateway: GatewayProc) -> None:
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(mock_gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200 and "x-trace-id" not in r.headers
    assert "trace_id" not in mock_gateway.wait_for_access(r.headers["x-request-id"])


def test_a_dead_collector_never_fails_or_holds_a_request(gateway_factory: GatewayFactory) -> None:
    """Export goes to a port nothing listens on, with a 30 s export timeout: requests
    answer as usual (the queue is drained by a thread), and SIGTERM still exits soon."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        "OTEL_BSP_SCHEDULE_DELAY": "10",
        "OTEL_BSP_MAX_QUEUE_SIZE": "64",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
        "GATEWAY_PRESTOP_SECONDS": "0",
    }
    gw = gateway_factory(env, name="gateway-deadcollector")
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        for _ in range(100):  # more spans than the queue holds
            t0 = time.monotonic()
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and len(r.headers["x-trace-id"]) == 32
            assert time.monotonic() - t0 < 5  # never the exporter's 30 s
    t0 = time.monotonic()
    os.kill(gw.proc.pid, signal.SIGTERM)
    assert gw.proc.popen.wait(20) == 0
    assert time.monotonic() - t0 < 15  # the flush gives up; it does not wait 30 s
    assert "Traceback" not in gw.proc.stdout() + gw.proc.stderr()


def test_a_bad_sdk_variable_stops_the_start(tmp_path: Path) -> None:
    """The SDK's own variables are checked before any worker starts (not a crash loop)."""
    import subprocess
    import sys

    from tests.harness import clean_env, free_port

    env = clean_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "OTEL_BSP_MAX_QUEUE_SIZE": "8",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
        }
    )
    argv = [sys.executable, "-m", "gateway", "serve", "--port", str(free_port())]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "OTEL_" in done.stderr and "Traceback" not in done.stderr


def test_tracing_off_imports_and_wraps_nothing() -> None:
    """No endpoint: the tracing module (and the SDK it imports) is never loaded, and the
    pipeline's stages are the stage objects themselves."""
    import subprocess
    import sys

    from tests.harness import clean_env

    code = (
        "import sys\n"
        "from gateway.app import build_pipeline, create_app\n"
        "from gateway.settings import Settings\n"
        "edge = create_app(Settings.from_env({}))\n"
        "stages = build_pipeline(edge.gateway).stages\n"
        "assert edge.tracer is None\n"
        "assert all(type(s).__module__.startswith('gateway.pipeline') for s in stages), stages\n"
        "assert 'gateway.telemetry.tracing' not in sys.modules\n"
        "assert 'opentelemetry.sdk.trace' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
