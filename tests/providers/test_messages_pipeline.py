"""/v1/messages runs the same pipeline stages as chat: auth, rate limits, attempts."""

from __future__ import annotations

import hashlib

import msgspec
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import parse_config
from gateway.settings import Settings

KEY = "sk-virtual-team-a"


def _client(config: dict) -> TestClient:
    settings = msgspec.structs.replace(
        Settings.from_env({"LOG_LEVEL": "warning"}), config=parse_config(config)
    )
    return TestClient(create_app(settings))


def _config(**limits: object) -> dict:
    return {
        "models": [{"alias": "demo", "deployments": [{"provider": "mock", "model": "mock-1"}]}],
        "keys": [
            {
                "name": "team-a",
                "key_sha256": hashlib.sha256(KEY.encode()).hexdigest(),
                **({"limits": limits} if limits else {}),
            }
        ],
    }


BODY = {"model": "demo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def test_messages_requires_a_configured_key() -> None:
    with _client(_config()) as c:
        r = c.post("/v1/messages", json=BODY)
        assert r.status_code == 401
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "authentication_error"
        assert KEY not in r.text
        ok = c.post("/v1/messages", json=BODY, headers={"x-api-key": KEY})
        assert ok.status_code == 200, ok.text
        assert ok.json()["type"] == "message"
        assert ok.headers["x-gateway-attempts"] == "1"
        counted = c.post("/v1/messages/count_tokens", json=BODY)
        assert counted.status_code == 401


def test_messages_is_rate_limited_per_key() -> None:
    with _client(_config(rpm=2, rpm_burst=2)) as c:
        headers = {"x-api-key": KEY}
        codes = [c.post("/v1/messages", json=BODY, headers=headers).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.post("/v1/messages", json=BODY, headers=headers)
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert int(r.headers["retry-after"]) >= 1


def test_models_list_requires_a_key_and_shows_only_allowed_models() -> None:
    config = _config()
    config["keys"][0]["models"] = ["demo"]
    with _client(config) as c:
        assert c.get("/v1/models").status_code == 401
        listed = c.get("/v1/models", headers={"authorization": f"Bearer {KEY}"}).json()
        assert [m["id"] for m in listed["data"]] == ["demo"]
