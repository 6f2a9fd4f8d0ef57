"""/health, /health/live and /health/ready, with the in-memory backend and with a Redis
that cannot be reached."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ALIASES, GatewayFactory
from tests.harness import PROVIDER_KEY, FakeUpstream, GatewayProc, closed_port

pytestmark = pytest.mark.e2e


def test_health(http: httpx.Client, fake_upstream: FakeUpstream) -> None:
    r = http.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok"
    assert isinstance(h["version"], str) and h["version"]
    assert h["uptime_s"] >= 0
    assert h["state_backend"] == {"kind": "memory", "ok": True}
    assert set(h["providers"]) == {"openai", "mock"}
    assert all(p["state"] == "enabled" for p in h["providers"].values())
    assert h["providers"]["openai"]["configured_deployments"] == 4
    assert h["providers"]["mock"]["configured_deployments"] == 1
    assert h["models"] == sorted(ALIASES)
    assert h["speedups"] and set(h["speedups"].values()) <= {"c", "py"}
    assert "sse" in h["speedups"]
    assert PROVIDER_KEY not in r.text
    assert str(fake_upstream.port) not in r.text  # upstream URLs are for operators only


def test_live_and_ready(http: httpx.Client) -> None:
    r = http.get("/health/live")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = http.get("/health/ready")
    assert (r.status_code, r.json()) == (200, {"status": "ready", "state_backend": "memory"})
    assert r.headers["content-type"].startswith("application/json")


def test_mock_only_health(mock_gateway: GatewayProc) -> None:
    h = httpx.get(mock_gateway.url + "/health", timeout=5).json()
    assert list(h["providers"]) == ["mock"] and h["models"] == []


def test_ready_fails_when_redis_is_unreachable(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(
        {"REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"},
        name="gateway-noredis",
        ready_path="/health/live",
    )
    try:
        with httpx.Client(base_url=gw.url, timeout=10) as c:
            r = c.get("/health/ready")
            assert r.status_code == 503
            assert r.json() == {"status": "unavailable", "state_backend": "redis"}
            assert c.get("/health/live").status_code == 200
            h = c.get("/health").json()
            assert h["status"] == "degraded"
            assert h["state_backend"] == {"kind": "redis", "ok": False}
            # the gateway keeps serving while Redis is down
            chat = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
            assert c.post("/v1/chat/completions", json=chat).status_code == 200
    finally:
        gw.stop()


def test_sigterm_stops_gracefully(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({}, name="gateway-sigterm")
    assert httpx.get(gw.url + "/health/live", timeout=5).status_code == 200
    assert gw.stop() == 0  # SIGTERM: workers stop, the main process exits 0 within the grace
    assert "Traceback" not in gw.proc.stdout() + gw.proc.stderr()
