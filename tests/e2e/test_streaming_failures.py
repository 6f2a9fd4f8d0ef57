"""The stream failure contract: after the first byte a failure ends the stream with one
``data: {"error": ...}`` event and no ``[DONE]``; before it, a failure is an ordinary
HTTP error; a client that goes away makes the gateway close the upstream at once."""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import CUT_AFTER, ECHO_PIECE
from tests.harness import PROVIDER_KEY, FakeUpstream, GatewayProc, metric_sum, wait_until

pytestmark = pytest.mark.e2e

URL = "/v1/chat/completions"


def body(model: str, text: str = "hello world, this is a longer prompt") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": True}


def sse_events(raw: str) -> list[str]:
    assert raw.endswith("\n\n"), f"stream did not end on an event boundary: {raw[-200:]!r}"
    events = raw.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


def raw_stream(
    http: httpx.Client, model: str, text: str = "hello world, this is a prompt"
) -> tuple[httpx.Response, list[str]]:
    with http.stream("POST", URL, json=body(model, text)) as r:
        raw = r.read().decode()
    return r, sse_events(raw)


def assert_error_tail(events: list[str]) -> dict[str, Any]:
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert set(last) == {"error"}
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert isinstance(last["error"]["message"], str) and last["error"]["message"]
    assert PROVIDER_KEY not in events[-1] and "Traceback" not in events[-1]
    # exactly one error event, at the end
    assert sum('"error"' in e for e in events) == 1
    return last["error"]  # type: ignore[no-any-return]


def test_cut_stream_raw(http: httpx.Client) -> None:
    text = "abcdefghijklmnopqrstuvwxyz"
    r, events = raw_stream(http, "openai/fake-cut", text)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    err = assert_error_tail(events)
    assert err["type"] == "upstream_error"
    relayed = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in relayed)
    assert content == text[: CUT_AFTER * ECHO_PIECE]  # what arrived before the cut


def test_cut_stream_sdk_raises(client: openai.OpenAI) -> None:
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in client.chat.completions.create(**body("openai/fake-cut")):
            got.append(chunk.choices[0].delta.content or "")
    assert not isinstance(exc.value, openai.APIStatusError)  # raised from the stream itself
    assert exc.value.type == "upstream_error"
    assert "".join(got)  # the partial content reached the client first


def test_stream_error_event_raw(http: httpx.Client) -> None:
    r, events = raw_stream(http, "openai/fake-stream-error")
    assert r.status_code == 200
    assert_error_tail(events)
    assert json.loads(events[-2])["choices"][0]["delta"]["content"] == "partial"


def test_stream_error_event_sdk_raises(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIError) as exc:
        list(client.chat.completions.create(**body("openai/fake-stream-error")))
    assert exc.value.message


def test_stream_error_event_keeps_the_upstream_message(http: httpx.Client) -> None:
    _r, events = raw_stream(http, "openai/fake-stream-error")
    err = assert_error_tail(events)
    assert "crashed mid-stream" in err["message"]
    assert err["type"] == "server_error"


@pytest.mark.parametrize(
    "model,status", [("openai/fake-500", 502), ("openai/fake-429", 429), ("openai/fake-401", 502)]
)
def test_error_before_first_byte_is_plain_http(http: httpx.Client, model: str, status: int) -> None:
    with http.stream("POST", URL, json=body(model)) as r:
        raw = r.read()
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert not raw.startswith(b"data:")
    assert set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}


def test_garbage_stream_before_any_event_is_plain_502(http: httpx.Client) -> None:
    """The upstream says 200 but sends no event at all: nothing was committed yet."""
    with http.stream("POST", URL, json=body("openai/fake-bad-json")) as r:
        raw = r.read()
    assert r.status_code == 502
    assert json.loads(raw)["error"]["type"] == "upstream_error"


def test_client_disconnect_closes_upstream(
    gateway_proc: GatewayProc, fake_upstream: FakeUpstream
) -> None:
    before = fake_upstream.streams()
    rid = "disc-" + uuid.uuid4().hex[:10]
    payload = json.dumps(body("openai/fake-hang-stream")).encode()
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"x-request-id: {rid}\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode()
    s = socket.create_connection(("127.0.0.1", gateway_proc.port), timeout=5)
    try:
        s.sendall(head + payload)
        data = b""
        while b"data: " not in data:
            chunk = s.recv(65536)
            assert chunk, "gateway closed the stream before the first event"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert fake_upstream.streams()["open"] == before["open"] + 1
    finally:
        s.close()
    t0 = time.monotonic()
    assert wait_until(
        lambda: fake_upstream.streams()["client_gone"] > before["client_gone"], timeout=2.0
    ), f"the upstream stream was not closed: {fake_upstream.streams()}"
    closed_after = time.monotonic() - t0
    assert wait_until(lambda: fake_upstream.streams()["open"] == before["open"], timeout=2.0)
    assert closed_after < 2.0

    line = gateway_proc.wait_for_access(rid)
    assert line["status"] == 200 and line["error"] == "client_disconnected"
    metrics = gateway_proc.metrics()
    assert (
        metric_sum(
            metrics,
            "llm_provider_requests_total",
            provider="openai",
            model="openai/fake-hang-stream",
            outcome="cancelled",
        )
        >= 1
    )


def test_stream_errors_are_counted(http: httpx.Client, gateway_proc: GatewayProc) -> None:
    def stream_errors() -> float:
        return metric_sum(
            gateway_proc.metrics(),
            "llm_provider_errors_total",
            provider="openai",
            model="openai/fake-cut",
            kind="stream",
        )

    before = stream_errors()
    raw_stream(http, "openai/fake-cut")
    assert wait_until(lambda: stream_errors() == before + 1, timeout=3)
