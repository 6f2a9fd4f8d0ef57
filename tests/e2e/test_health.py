"""/health, /health/live and /health/ready, with the in-memory backend and with a Redis
that cannot be reached."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import pytest

from gateway import __version__
from tests.conftest import ALIASES, GatewayFactory
from tests.harness import PROVIDER_KEY, SPEEDUPS, FakeUpstream, GatewayProc, closed_port

pytestmark = pytest.mark.e2e


def test_health(http: httpx.Client, fake_upstream: FakeUpstream, gateway_proc: GatewayProc) -> None:
    before = time.time()
    r = http.get("/health")
    after = time.time()
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok"
    assert h["version"] == __version__
    # Up since it was spawned at the latest and ready at the earliest (0.1 s rounding).
    assert before - gateway_proc.ready_at - 0.05 <= h["uptime_s"]
    assert h["uptime_s"] <= after - gateway_proc.proc.started_at + 0.05
    assert h["state_backend"] == {"kind": "memory", "ok": True}
    assert set(h["providers"]) == {"openai", "mock"}
    assert all(p["state"] == "enabled" for p in h["providers"].values())
    assert h["providers"]["openai"]["configured_deployments"] == 4
    assert h["providers"]["mock"]["configured_deployments"] == 1
    assert h["models"] == sorted(ALIASES)
    assert h["speedups"] == SPEEDUPS
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


# -- who sees /health's details ---------------------------------------------------------

MASTER = "gw-master-canary-7f3a"
TEAM_KEY = "sk-team-canary-91b2"
DETAIL_FIELDS = {"providers", "models", "routing", "state_backend", "rate_limits", "speedups"}


def _keys_config(tmp_path: Path) -> str:
    path = tmp_path / "keys.yaml"
    digest = hashlib.sha256(TEAM_KEY.encode()).hexdigest()
    path.write_text(
        "models:\n"
        "  - alias: demo\n"
        "    deployments: [{provider: mock, model: mock-1}]\n"
        f"keys:\n  - {{name: team, key_sha256: {digest}}}\n"
    )
    return str(path)


def _health(gw: GatewayProc, headers: dict[str, str] | None = None) -> httpx.Response:
    r = httpx.get(gw.url + "/health", headers=headers, timeout=5)
    assert r.status_code == 200
    assert MASTER not in r.text and TEAM_KEY not in r.text
    return r


def _is_summary(r: httpx.Response) -> bool:
    body = r.json()
    return set(body) == {"status", "version"} and body["status"] == "ok"


def test_health_details_need_the_master_key(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_factory(
        {"GATEWAY_CONFIG": _keys_config(tmp_path), "GATEWAY_MASTER_KEY": MASTER},
        name="gateway-health-admin",
    )
    try:
        assert _is_summary(_health(gw))
        assert _is_summary(_health(gw, {"authorization": f"Bearer {TEAM_KEY}"}))
        assert _is_summary(_health(gw, {"authorization": f"Bearer {MASTER}x"}))
        assert _is_summary(_health(gw, {"authorization": f"Bearer {MASTER[:-1]}"}))
        assert _is_summary(_health(gw, {"authorization": MASTER}))  # no scheme
        for headers in ({"authorization": f"Bearer {MASTER}"}, {"x-api-key": MASTER}):
            h = _health(gw, headers).json()
            assert set(h) >= DETAIL_FIELDS, h
            assert h["models"] == ["demo"] and "demo" in h["routing"]
        # probes stay open
        assert httpx.get(gw.url + "/health/live", timeout=5).status_code == 200
        assert httpx.get(gw.url + "/health/ready", timeout=5).status_code == 200
        # the master key is an admin credential, not an API key
        chat = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json=chat,
            headers={"authorization": f"Bearer {MASTER}"},
            timeout=5,
        )
        assert r.status_code == 401
    finally:
        gw.stop()


def test_health_with_keys_and_no_master_key_is_a_summary(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_factory({"GATEWAY_CONFIG": _keys_config(tmp_path)}, name="gateway-health-keys")
    try:
        assert _is_summary(_health(gw))
        assert _is_summary(_health(gw, {"authorization": f"Bearer {TEAM_KEY}"}))
    finally:
        gw.stop()
