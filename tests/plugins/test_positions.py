"""Every position the config accepts runs its plugin, in config order (in-process app;
the same over real sockets, on every endpoint, in ``test_contract.py``)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import parse_config
from gateway.pipeline.run import POSITIONS
from gateway.plugins.base import Reject
from gateway.settings import Settings

PROBE = "tests.plugins_fixture.probe"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def client(plugins: list[dict[str, Any]], **config: Any) -> TestClient[Any]:
    config = {
        "models": [{"alias": "demo", "deployments": [{"provider": "mock", "model": "mock-1"}]}],
        "plugins": plugins,
        **config,
    }
    settings = msgspec.structs.replace(
        Settings.from_env({"LOG_LEVEL": "warning"}), config=parse_config(config)
    )
    return TestClient(create_app(settings))


@pytest.mark.parametrize("at", sorted(POSITIONS))
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_every_accepted_position_runs(at: str, stream: bool) -> None:
    with client([{"use": f"{PROBE}:Probe", "at": at, "options": {"tag": "p"}}]) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert r.status_code == 200, r.text
        assert "x-probe-p" in r.headers, at


def test_plugins_at_one_position_run_in_config_order() -> None:
    plugins = [
        {"use": f"{PROBE}:stamp", "at": "after_auth", "options": {"value": "first"}},
        {"use": f"{PROBE}:stamp", "at": "after_auth", "options": {"value": "second"}},
        {"use": f"{PROBE}:stamp", "at": "before_cache", "options": {"value": "third"}},
    ]
    with client(plugins) as c:
        assert c.post("/v1/chat/completions", json=CHAT).headers["x-probe-stamp"] == "third"
    with client(plugins[:2]) as c:
        assert c.post("/v1/chat/completions", json=CHAT).headers["x-probe-stamp"] == "second"


def test_a_cache_hit_answers_before_the_plugins_after_cache() -> None:
    plugins = [
        {"use": f"{PROBE}:Probe", "at": "before_cache", "options": {"tag": "before"}},
        {"use": f"{PROBE}:Probe", "at": "after_cache", "options": {"tag": "after"}},
    ]
    models = [
        {
            "alias": "demo",
            "cache": {"ttl": 60},
            "deployments": [{"provider": "mock", "model": "mock-1"}],
        }
    ]
    with client(plugins, models=models) as c:
        miss = c.post("/v1/chat/completions", json=CHAT)
        hit = c.post("/v1/chat/completions", json=CHAT)
    assert miss.headers["x-gateway-cache"] == "MISS"
    assert {"x-probe-before", "x-probe-after"} <= set(miss.headers)
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert "x-probe-before" in hit.headers
    assert "x-probe-after" not in hit.headers


def test_a_reject_that_is_not_a_4xx_is_a_plugin_bug() -> None:
    with pytest.raises(ValueError, match="Reject takes a 4xx status, not 200"):
        Reject("no", status=200)
    with client([{"use": f"{PROBE}:misuse", "at": "after_auth"}]) as c:
        r = c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "\u20acuro", "nul\x00"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_header_http_cannot_carry_fails_the_plugin_not_the_answer(
    value: str, stream: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the check, the answer failed as it was sent: a 500 from outside the
    pipeline naming no plugin (a UnicodeEncodeError), or a header injected."""
    plugins = [{"use": f"{PROBE}:stamp", "at": "after_attempts", "options": {"value": value}}]
    with client(plugins) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "x-probe-stamp" not in r.headers and "x-injected" not in r.headers
    logged = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    (line,) = [x for x in logged if x["level"] == "error"]
    assert (line["msg"], line["plugin"]) == ("plugin failed", f"{PROBE}:stamp")
