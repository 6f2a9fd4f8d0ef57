"""Response headers every client can rely on: x-request-id, server-timing, x-gateway-provider."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.e2e

URL = "/v1/chat/completions"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
GENERATED = re.compile(r"^[0-9a-f]{24}$")
TIMING = re.compile(r"(?:^|,\s*)gateway;dur=(\d+(?:\.\d+)?)(?:,|$)")


@pytest.mark.parametrize(
    "rid", ["abc-123", "req_01HZX.7:Q", "A" * 128], ids=["plain", "punctuation", "max-length"]
)
def test_safe_request_id_is_echoed(http: httpx.Client, rid: str) -> None:
    r = http.post(URL, json=CHAT, headers={"x-request-id": rid})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == rid


@pytest.mark.parametrize(
    "rid",
    ["has space", "semi;colon", "new\\nline", "A" * 129, "<script>", "ünïcode"],
    ids=["space", "semicolon", "escape", "too-long", "html", "non-ascii"],
)
def test_unsafe_request_id_is_replaced(http: httpx.Client, rid: str) -> None:
    r = http.post(URL, json=CHAT, headers={"x-request-id": rid.encode("utf-8")})
    assert r.status_code == 200
    assert GENERATED.match(r.headers["x-request-id"]), r.headers["x-request-id"]


def test_request_id_generated_and_unique(http: httpx.Client) -> None:
    ids = {http.post(URL, json=CHAT).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(GENERATED.match(i) for i in ids)
    assert len(http.post(URL, json=CHAT).headers.get_list("x-request-id")) == 1


def test_request_id_on_errors_and_health(http: httpx.Client) -> None:
    for method, path, kw in [
        ("POST", URL, {"content": b"not json"}),
        ("POST", URL, {"json": {**CHAT, "model": "nope"}}),
        ("POST", URL, {"json": {**CHAT, "model": "openai/fake-500"}}),
        ("GET", "/health", {}),
        ("GET", "/v1/models", {}),
    ]:
        r = http.request(method, path, headers={"x-request-id": "rid-err-1"}, **kw)
        assert r.headers["x-request-id"] == "rid-err-1", (path, r.status_code)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_server_timing_and_provider(http: httpx.Client, stream: bool) -> None:
    with http.stream("POST", URL, json={**CHAT, "stream": stream}) as r:
        r.read()
    assert r.status_code == 200
    timing = r.headers["server-timing"]
    m = TIMING.search(timing)
    assert m, timing
    assert 0 <= float(m.group(1)) < 1000
    assert "upstream;dur=" in timing
    assert r.headers["x-gateway-provider"] == "openai"


def test_provider_header_names_the_serving_provider(http: httpx.Client) -> None:
    r = http.post(URL, json={**CHAT, "model": "demo"})
    assert r.headers["x-gateway-provider"] == "mock"
    r = http.post("/v1/embeddings", json={"model": "embed", "input": "x"})
    assert r.headers["x-gateway-provider"] == "openai"
    assert TIMING.search(r.headers["server-timing"])


def test_upstream_headers_are_not_leaked(http: httpx.Client) -> None:
    r = http.post(URL, json={**CHAT, "model": "openai/fake-429"})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    # the upstream's own response headers stay upstream
    assert "aiohttp" not in r.headers.get("server", "")
