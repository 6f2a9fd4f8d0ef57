"""The logs operators grep, and the process's own resource gauges, over real sockets:
one JSON access line per request, one ``provider_error`` event per failed upstream
attempt, and debug logging that adds no secret."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.telemetry.resources import open_connections
from tests.conftest import GatewayFactory
from tests.fakes.echo_upstream import OTHER_KEY, PASSWORD
from tests.harness import Fake, GatewayProc, metric_sum, start_fake, wait_until
from tests.ops.conftest import OLD_KEY, OpsUpstream
from tests.ops.helpers import write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gw(
    gateway_factory: GatewayFactory,
    ops_upstream: OpsUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> GatewayProc:
    ops = ops_upstream.url
    text = (
        "models:\n"
        "  - alias: flaky\n    strategy: priority\n    deployments:\n"
        f"      - {{provider: openai, model: ops-500, base_url: '{ops}', priority: 0,"
        " api_key_env: OPS_KEY}\n"
        f"      - {{provider: openai, model: ops-echo, base_url: '{ops}', priority: 1,"
        " api_key_env: OPS_KEY}\n"
        "  - alias: cached\n    cache: {ttl: 60}\n    deployments:\n"
        f"      - {{provider: openai, model: ops-echo, base_url: '{ops}', api_key_env: OPS_KEY}}\n"
    )
    cfg = write_config(tmp_path_factory.mktemp("logs") / "g.yaml", text)
    return gateway_factory({"GATEWAY_CONFIG": cfg, "OPS_KEY": OLD_KEY}, name="gateway-logs")


def _chat(gw: GatewayProc, model: str, content: str = "hi") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=20)


def test_access_line_has_what_operators_grep(gw: GatewayProc) -> None:
    r = _chat(gw, "cached", "access-line")
    assert r.status_code == 200
    line = gw.wait_for_access(r.headers["x-request-id"])
    assert line["status"] == 200 and line["duration_ms"] > 0
    assert (line["provider"], line["model"], line["attempts"]) == ("openai", "cached", 1)
    assert line["cache"] == "MISS"
    assert (line["prompt_tokens"], line["completion_tokens"]) == (7, 5)
    hit = _chat(gw, "cached", "access-line")
    assert gw.wait_for_access(hit.headers["x-request-id"])["cache"] == "HIT"


def test_one_provider_error_per_failed_attempt(gw: GatewayProc) -> None:
    r = _chat(gw, "flaky")
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    rid = r.headers["x-request-id"]

    def events() -> list[dict[str, Any]]:
        return [
            x for x in gw.json_logs() if x.get("msg") == "provider_error" and x["request_id"] == rid
        ]

    assert wait_until(lambda: bool(events()))
    (event,) = events()
    assert event["level"] == "warning" and event["event"] == "provider_error"
    assert (event["provider"], event["model"], event["upstream_model"]) == (
        "openai",
        "flaky",
        "ops-500",
    )
    assert event["status"] == 500 and event["attempt"] == 1
    assert (event["retry"], event["breaker"]) == ("any", True)
    assert event["phase"] == "before_first_byte"
    assert gw.wait_for_access(rid)["attempts"] == 2


def test_open_connections_are_counted() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            counts = open_connections()
            assert counts is not None and counts[0] >= 1 and counts[1] >= 1
        finally:
            accepted.close()
            client.close()


def test_resource_gauges_are_exported(gw: GatewayProc) -> None:
    text = gw.metrics()
    assert metric_sum(text, "gateway_process_resident_memory_bytes") > 0
    assert "gateway_process_open_connections" in text


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    with start_fake("echo_upstream", tmp_path_factory.mktemp("echo"), "unchecked") as fake:
        yield fake


@pytest.mark.parametrize("level", [{"LOG_LEVEL": "debug"}, {"RUST_LOG": "debug"}])
def test_debug_logging_adds_no_secret(
    gateway_factory: GatewayFactory, echo: Fake, tmp_path: Path, level: dict[str, str]
) -> None:
    """Keys from variables and from files, an upstream that echoes them into errors and
    streams, at debug level: none of them in any line the processes write."""
    env_key, file_key, master = "sk-env-canary-51aa", "sk-file-canary-62bb", "master-canary-73cc"
    key_file = tmp_path / "anthropic-key"
    key_file.write_text(file_key)
    env = {
        "OPENAI_API_KEY": env_key,
        "OPENAI_BASE_URL": echo.root + "/v1",
        "ANTHROPIC_API_KEY_FILE": str(key_file),
        "ANTHROPIC_BASE_URL": echo.root,
        "GATEWAY_MASTER_KEY": master,
        "LOG_LEVEL": "",
        **level,
    }
    gw = gateway_factory(env, name="gateway-debug")
    # With a master key the gateway is closed: a virtual key of the admin API calls it.
    admin = {"authorization": f"Bearer {master}"}
    made = httpx.post(gw.url + "/admin/keys", json={"name": "debug"}, headers=admin, timeout=5)
    assert made.status_code == 201, made.text
    virtual = made.json()["key"]
    client = {"authorization": f"Bearer {virtual}"}
    for model in ("openai/echo-400", "openai/echo-500", "anthropic/echo-500", "openai/ok"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        httpx.post(gw.url + "/v1/chat/completions", json=body, headers=client, timeout=20)
    body = {
        "model": "openai/echo-stream",
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    httpx.post(gw.url + "/v1/chat/completions", json=body, headers=client, timeout=20)
    httpx.get(gw.url + "/health", headers={"authorization": f"Bearer {master}"}, timeout=5)
    gw.stop()
    out = gw.proc.stdout() + gw.proc.stderr()
    assert '"msg":"upstream_attempt"' in out and '"level":"debug"' in out  # it did log
    for secret in (env_key, file_key, master, virtual, PASSWORD, OTHER_KEY):
        assert secret not in out, secret
