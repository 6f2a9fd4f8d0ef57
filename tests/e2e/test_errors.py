"""Every error case over real sockets: the SDK raises its matching exception type, the
body is the OpenAI error envelope, and no body carries a traceback or the provider key."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import GatewayFactory
from tests.harness import PROVIDER_KEY, FakeUpstream, GatewayProc, closed_port

pytestmark = pytest.mark.e2e

URL = "/v1/chat/completions"
SMALL_CAP = 4096
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def msgs(text: str = "hello") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_clean(text: str) -> None:
    assert "Traceback" not in text
    assert PROVIDER_KEY not in text


def envelope(resp: httpx.Response | Any, status: int) -> dict[str, Any]:
    """Check status, content type and the exact OpenAI error shape; return the error."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json")
    assert_clean(resp.text)
    body = json.loads(resp.text)
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ENVELOPE_KEYS, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    return err  # type: ignore[no-any-return]


def sdk_error(exc: openai.APIStatusError, status: int) -> dict[str, Any]:
    err = envelope(exc.response, status)
    assert exc.status_code == status
    assert (exc.code, exc.param, exc.type) == (err["code"], err["param"], err["type"])
    return err


# -- the client's fault: 4xx -----------------------------------------------------------------


def test_invalid_json_body(http: httpx.Client) -> None:
    r = http.post(
        URL,
        content=b'{"model": "chat", "messages": [',
        headers={"content-type": "application/json"},
    )
    err = envelope(r, 400)
    assert (err["type"], err["code"]) == ("invalid_request_error", "invalid_json")
    assert r.headers["x-request-id"]


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": msgs(), "temperature": 7}, "temperature"),
        ({"messages": msgs(), "max_tokens": 0}, "max_tokens"),
        ({"messages": msgs(), "top_logprobs": 99}, "top_logprobs"),
        ({"messages": [{"role": "user", "content": [{"type": ""}]}]}, "messages[0].content"),
        ({"messages": []}, "messages"),
    ],
    ids=["role", "temperature", "max_tokens", "top_logprobs", "content-part", "empty-messages"],
)
def test_schema_violation(client: openai.OpenAI, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="chat", **kwargs)
    err = sdk_error(exc.value, 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] is not None and err["param"].startswith(param)


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model-xyz", messages=msgs())
    err = sdk_error(exc.value, 404)
    assert (err["code"], err["param"]) == ("model_not_found", "model")
    assert "no-such-model-xyz" in err["message"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gemini/text-embedding-004", input="x")  # not enabled


def test_json_nested_too_deep(http: httpx.Client) -> None:
    def body(depth: int) -> dict[str, Any]:
        """A request whose containers nest exactly ``depth`` levels (scalars don't count)."""
        value: Any = ["leaf"]
        for _ in range(depth - 3):  # the top object and "metadata" are levels 1 and 2
            value = [value]
        return {"model": "chat", "messages": msgs(), "metadata": {"deep": value}}

    assert http.post(URL, json=body(64)).status_code == 200
    err = envelope(http.post(URL, json=body(65)), 400)
    assert err["code"] == "invalid_json" and "64" in err["message"]
    huge = b'{"model": "chat", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    err = envelope(http.post(URL, content=huge), 400)
    assert err["code"] == "invalid_json"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "chat", "messages": [{"role": "user", "content": "caf\xe9"}]}',
        b'{"model": "chat", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
        b"\xff\xfe{\x00}\x00",
    ],
    ids=["latin1-byte", "encoded-surrogate", "utf16"],
)
def test_invalid_utf8(http: httpx.Client, raw: bytes) -> None:
    err = envelope(http.post(URL, content=raw), 400)
    assert err["code"] == "invalid_json"


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udfff", b"\\ud800\\u0041", b"x\\ud83d"])
def test_lone_surrogate_escape(http: httpx.Client, escape: bytes) -> None:
    raw = b'{"model": "chat", "messages": [{"role": "user", "content": "' + escape + b'"}]}'
    err = envelope(http.post(URL, content=raw), 400)
    assert err["code"] == "invalid_json"


def test_paired_surrogate_escape_is_fine(http: httpx.Client, fake_upstream: FakeUpstream) -> None:
    marker = uuid.uuid4().hex
    raw = (
        b'{"model": "chat", "messages": [{"role": "user", "content": "'
        + marker.encode()
        + b' \\ud83d\\ude00"}]}'
    )
    r = http.post(URL, content=raw)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == f"{marker} \U0001f600"


# -- body size cap -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_cap_gateway(gateway_factory: GatewayFactory) -> GatewayProc:
    return gateway_factory({"GATEWAY_MAX_BODY_BYTES": str(SMALL_CAP)}, name="gateway-smallcap")


def test_body_over_cap_sdk(small_cap_gateway: GatewayProc) -> None:
    with small_cap_gateway.openai() as c:
        c.chat.completions.create(model="mock-1", messages=msgs("x" * (SMALL_CAP // 2)))
        with pytest.raises(openai.APIStatusError) as exc:
            c.chat.completions.create(model="mock-1", messages=msgs("x" * SMALL_CAP))
    err = sdk_error(exc.value, 413)
    assert (err["type"], err["code"]) == ("invalid_request_error", "request_too_large")


def test_body_over_cap_chunked(small_cap_gateway: GatewayProc) -> None:
    """No Content-Length: the cap is enforced while reading."""

    def gen() -> Iterator[bytes]:
        yield b'{"model": "mock-1", "messages": [{"role": "user", "content": "'
        for _ in range(SMALL_CAP // 512 + 2):
            yield b"y" * 512
        yield b'"}]}'

    r = httpx.post(small_cap_gateway.url + URL, content=gen(), timeout=10)
    assert "content-length" not in r.request.headers
    err = envelope(r, 413)
    assert err["code"] == "request_too_large"


def test_body_over_default_cap(http: httpx.Client) -> None:
    big = {"model": "chat", "messages": msgs("z" * (10 * 1024 * 1024 + 10))}
    err = envelope(http.post(URL, json=big), 413)
    assert err["code"] == "request_too_large"


def _raw_request(port: int, head: str, body: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(head.encode() + body)
    return s


def _read_response(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or not _complete(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def test_declared_length_over_cap_is_refused_without_reading(gateway_proc: GatewayProc) -> None:
    """Content-Length says 50 MB, 100 bytes arrive and the connection stays open: the
    413 must come at once, not after waiting for (or reading) the rest."""
    declared = 50 * 1024 * 1024
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {declared}\r\n\r\n"
    )
    t0 = time.monotonic()
    s = _raw_request(gateway_proc.port, head, b'{"model": "chat", "messages": [' + b" " * 68)
    try:
        data = _read_response(s, timeout=5)
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert elapsed < 2.0, f"413 took {elapsed:.2f}s"
    body = json.loads(data.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_too_large"
    assert str(declared) in body["error"]["message"]


# -- the upstream's fault -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_429(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="openai/fake-429", messages=msgs(), stream=stream)
    err = sdk_error(exc.value, 429)
    assert exc.value.response.headers["retry-after"] == "7"
    assert (err["type"], err["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "Rate limit reached" in err["message"]


def test_upstream_400_keeps_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="openai/fake-400", messages=msgs())
    err = sdk_error(exc.value, 400)
    assert err["param"] == "temperature" and err["code"] == "invalid_value"
    assert "too hot" in err["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_500_is_502(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="openai/fake-500", messages=msgs(), stream=stream)
    err = sdk_error(exc.value, 502)
    assert err["type"] == "upstream_error"


def test_upstream_401_is_502_without_the_key(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="openai/fake-401", messages=msgs())
    err = sdk_error(exc.value, 502)
    assert err["code"] == "upstream_auth_failed"
    assert "test-k" not in exc.value.response.text  # not even the upstream's masked echo


def test_upstream_bad_json_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="openai/fake-bad-json", messages=msgs())
    err = sdk_error(exc.value, 502)
    assert "not valid JSON" in err["message"]
    assert "<html>" not in exc.value.response.text


def test_upstream_read_timeout_is_504(client: openai.OpenAI) -> None:
    t0 = time.monotonic()
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="slow", messages=msgs())
    elapsed = time.monotonic() - t0
    err = sdk_error(exc.value, 504)
    assert (err["type"], err["code"]) == ("timeout", "upstream_timeout")
    assert 0.4 <= elapsed < 2.5, f"the 0.5 s read timeout took {elapsed:.2f}s"


def test_upstream_unreachable_is_502(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(
        {"OPENAI_API_KEY": PROVIDER_KEY, "OPENAI_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"},
        name="gateway-unreachable",
    )
    try:
        with gw.openai() as c:
            for stream in (False, True):
                with pytest.raises(openai.InternalServerError) as exc:
                    c.chat.completions.create(model="openai/gpt-4o", messages=msgs(), stream=stream)
                err = sdk_error(exc.value, 502)
                assert err["code"] == "upstream_connect_failed"
                assert "127.0.0.1" not in err["message"]  # no upstream URL leaks
            with pytest.raises(openai.InternalServerError):
                c.embeddings.create(model="openai/text-embedding-3-small", input="x")
            # an upstream that cannot list its models contributes nothing
            assert [m.id for m in c.models.list()] == []
    finally:
        gw.stop()


# -- routing errors ---------------------------------------------------------------------------


def test_unknown_path_is_404_envelope(http: httpx.Client) -> None:
    for method, path in [("GET", "/v1/nope"), ("POST", "/v2/chat/completions"), ("GET", "/")]:
        err = envelope(http.request(method, path), 404)
        assert err["code"] == "not_found"


def test_wrong_method_is_405_envelope(http: httpx.Client) -> None:
    for method, path in [("GET", URL), ("DELETE", URL), ("POST", "/v1/models"), ("PUT", "/health")]:
        r = http.request(method, path)
        err = envelope(r, 405)
        assert err["code"] == "method_not_allowed"
        assert r.headers.get("allow")


def test_routing_errors_carry_a_request_id(http: httpx.Client) -> None:
    assert (
        http.get("/v1/nope", headers={"x-request-id": "rid-404"}).headers.get("x-request-id")
        == "rid-404"
    )
    assert http.get(URL).headers.get("x-request-id")
