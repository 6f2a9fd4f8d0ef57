"""The plugin contract (``gateway/plugins/base.py``) end to end: plugins configured in
YAML, run by a real gateway process over real sockets, on every endpoint.

The test plugins are ``tests/plugins_fixture/probe.py``; the gateway and its config
are in ``conftest.py``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.endpoints import ENDPOINTS, Endpoint
from tests.harness import FakeUpstream, GatewayProc, metric_sum, wait_until
from tests.plugins.conftest import KEY, MODELS

pytestmark = pytest.mark.e2e
ACT = "tests.plugins_fixture.probe:Act"
STREAMING = [(e, s) for e in ENDPOINTS for s in ((False, True) if e.streams else (False,))]


def marker() -> str:
    return f"plugin-{uuid.uuid4().hex[:12]}"


def probe(r: Any, at: str) -> dict[str, str]:
    value = r.headers[f"x-probe-{at}"]
    return dict(item.split("=", 1) for item in value.split(";"))


def upstream_bodies(fakes: tuple[FakeUpstream, Any], text: str) -> list[dict[str, Any]]:
    """Request bodies either fake upstream received that mention ``text``."""
    found = []
    for fake in fakes:
        for req in fake.requests():
            if text in json.dumps(req["json"]):
                found.append(req["json"])
    return found


@pytest.fixture
def fakes(fake_upstream: FakeUpstream, anthropic_fake: Any) -> tuple[FakeUpstream, Any]:
    return fake_upstream, anthropic_fake


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_each_position_sees_what_the_stages_before_it_wrote(post: Any, endpoint: Endpoint) -> None:
    r = post(endpoint, "where am I")
    assert r.status_code == 200, r.text
    model = MODELS[endpoint.name]
    before_parse = probe(r, "before_parse")
    assert before_parse == {
        "endpoint": endpoint.name,
        "model": "-",
        "body": "0",
        "principal": "-",
        "plan": "0",
        "lease": "no",
        "served": "no",
    }
    assert probe(r, "before_auth")["model"] == model
    assert probe(r, "before_auth")["body"] != "0"
    assert probe(r, "before_auth")["principal"] == "-"
    assert probe(r, "before_route")["principal"] == "team-a"
    assert probe(r, "before_route")["plan"] == "0"
    assert probe(r, "after_route")["plan"] == "1"
    assert probe(r, "after_route")["lease"] == "no"
    limited = endpoint.name != "count_tokens"  # count_tokens is never rate limited
    assert probe(r, "after_limit")["lease"] == ("yes" if limited else "no")
    assert probe(r, "after_limit")["served"] == "no"
    assert r.headers["x-probe-stamp"] == "v1"  # a plain function, after attempts


@pytest.mark.parametrize(("endpoint", "stream"), STREAMING, ids=lambda v: str(v))
def test_a_plugin_rejects_with_its_own_4xx_in_the_endpoint_shape(
    post: Any, fakes: Any, endpoint: Endpoint, stream: bool
) -> None:
    text = marker()
    r = post(endpoint, text, act="reject", stream=stream)
    assert r.status_code == 451
    error = endpoint.error(r)
    assert error["message"] == "Refused by the probe plugin"
    assert error["type"] == "permission_error"
    if not endpoint.anthropic:
        assert error["code"] == "probe_denied"
    assert r.headers["x-request-id"]
    assert "x-probe-before_auth" in r.headers  # what plugins added before still goes out
    assert upstream_bodies(fakes, text) == []


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_plugin_adds_response_headers(post: Any, endpoint: Endpoint) -> None:
    r = post(endpoint, "add a header", act="header")
    assert r.status_code == 200, r.text
    assert r.headers["x-probe-added"] == "yes"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_plugin_rewrites_the_body_before_routing(
    post: Any, fakes: Any, endpoint: Endpoint
) -> None:
    original, rewritten = marker(), marker()
    r = post(endpoint, original, act="rewrite", arg=rewritten)
    assert r.status_code == 200, r.text
    assert upstream_bodies(fakes, original) == []
    (sent,) = upstream_bodies(fakes, rewritten)
    assert sent["model"] in ("fake-echo", "fake-embed", "claude-fake")
    if endpoint.name in ("chat", "messages"):
        assert rewritten in r.text  # the fakes echo the prompt they received


def plugin_failures(gw: GatewayProc, request_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in gw.json_logs()
        if line.get("request_id") == request_id and line.get("msg") == "plugin failed"
    ]


@pytest.mark.parametrize(("endpoint", "stream"), STREAMING, ids=lambda v: str(v))
@pytest.mark.parametrize(
    ("act", "error"), [("raise", "RuntimeError"), ("hang", "TimeoutError")], ids=["raises", "hangs"]
)
def test_a_failing_plugin_is_a_clean_500_and_the_gateway_serves_on(
    plugin_gateway: GatewayProc,
    post: Any,
    endpoint: Endpoint,
    stream: bool,
    act: str,
    error: str,
) -> None:
    r = post(endpoint, "this plugin fails", act=act, stream=stream)
    assert r.status_code == 500
    body = endpoint.error(r)
    rid = r.headers["x-request-id"]
    assert rid in body["message"]
    assert "broke" not in r.text and "Traceback" not in r.text  # the plugin's words stay inside
    assert wait_until(lambda: plugin_failures(plugin_gateway, rid), timeout=5)
    (line,) = plugin_failures(plugin_gateway, rid)
    errors = [x for x in plugin_gateway.json_logs() if x.get("request_id") == rid]
    assert [x["msg"] for x in errors if x["level"] == "error"] == ["plugin failed"]
    assert line["level"] == "error"
    assert line["plugin"] == ACT
    assert line["error"] == error
    assert plugin_gateway.proc.alive()
    after = post(endpoint, "the next request")
    assert after.status_code == 200, after.text


@pytest.mark.parametrize("act", ["reject", "raise", "hang"])
def test_a_plugin_after_attempts_that_ends_a_stream_closes_the_upstream(
    plugin_gateway: GatewayProc, fake_upstream: FakeUpstream, act: str
) -> None:
    """The upstream stream is open when a plugin after ``attempts`` ends the request
    (refuses, fails, or is still running when the client leaves): the gateway must
    close it, not leave the provider streaming to nobody until its own timeout."""
    gone = fake_upstream.streams()["client_gone"]
    body = {"model": "hang", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {KEY}", "x-probe-late": act}
    url = plugin_gateway.url + "/v1/chat/completions"
    if act == "hang":  # the client gives up long before the plugin's timeout (20 s)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=body, headers=headers, timeout=httpx.Timeout(5, read=0.5))
    else:
        r = httpx.post(url, json=body, headers=headers, timeout=15)
        assert r.status_code == (403 if act == "reject" else 500)
    assert wait_until(lambda: fake_upstream.streams()["client_gone"] > gone, timeout=5), (
        fake_upstream.streams()
    )


def test_metrics_still_add_up_when_plugins_define_metrics(
    plugin_gateway: GatewayProc, post: Any
) -> None:
    """Checking the config imports the plugins, and so prometheus_client, in the serving
    process before any worker exists: the workers' metrics must still reach /metrics,
    and that process's own zeros must not count as a live worker's."""
    from tests.endpoints import CHAT

    assert post(CHAT, "count me").status_code == 200
    assert wait_until(
        lambda: (
            metric_sum(
                plugin_gateway.metrics(), "http_requests_total", route=CHAT.path, status="200"
            )
            >= 1
        )
    )
    text = plugin_gateway.metrics()
    assert metric_sum(text, "gateway_state_backend_up") == 1
    assert "gateway_redactions_total" in text
