"""Streams over real sockets (issue 9, items 1 and 3): an upstream event whose JSON spans
several ``data:`` lines reaches the openai SDK whole, and content events that share a
network chunk with an error event reach the client before that error."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import BURST, EARLY
from tests.providers.golden import sse_events

pytestmark = pytest.mark.e2e

URL = "/v1/chat/completions"
# Quotes, braces, a line break and a CR in the content: all must survive as JSON escapes.
TEXT = 'line one\nline "two" {x: [1, 2]}\r\nend'


def body(model: str, text: str = TEXT) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_multiline_upstream_events_reach_the_sdk_whole(client: openai.OpenAI) -> None:
    got, usage = [], None
    for chunk in client.chat.completions.create(**body("openai/fake-multiline")):
        got.extend(c.delta.content or "" for c in chunk.choices)
        usage = chunk.usage or usage
    assert "".join(got) == TEXT
    assert usage is not None and usage.completion_tokens > 0


def test_multiline_upstream_events_go_out_one_json_per_line(http: httpx.Client) -> None:
    with http.stream("POST", URL, json=body("openai/fake-multiline")) as r:
        raw = r.read()
    assert r.status_code == 200
    events = sse_events(raw)  # every line a field, every event's JSON whole
    assert all(line.startswith(b"data: ") for line in raw.split(b"\n\n") if line)
    assert events[-1] == ("message", "[DONE]")
    text = "".join(c["delta"].get("content") or "" for _, e in events[:-1] for c in e["choices"])
    assert text == TEXT


@pytest.mark.parametrize(
    ("model", "before"),
    [
        ("openai/fake-burst-error", ""),  # the first chunk: before the stream is committed
        ("openai/fake-late-burst-error", EARLY),  # a later chunk: while it is relayed
    ],
)
def test_content_then_error_in_one_chunk_raw(http: httpx.Client, model: str, before: str) -> None:
    with http.stream("POST", URL, json=body(model)) as r:
        raw = r.read()
    assert r.status_code == 200, raw
    events = [e for _, e in sse_events(raw)]
    assert "[DONE]" not in events
    *content, last = events
    assert "".join(c["delta"].get("content") or "" for e in content for c in e["choices"]) == (
        before + "".join(BURST)
    )
    assert set(last) == {"error"}
    assert "failed mid-burst" in last["error"]["message"]


def test_content_then_error_in_one_chunk_sdk(client: openai.OpenAI) -> None:
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in client.chat.completions.create(**body("openai/fake-burst-error")):
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert not isinstance(exc.value, openai.APIStatusError)  # raised from the stream itself
    assert "".join(got) == "".join(BURST)
    assert "failed mid-burst" in exc.value.message


def test_an_error_after_only_the_role_chunk_is_a_plain_http_error(http: httpx.Client) -> None:
    """Nothing but the preamble came before the error: the stream was not committed."""
    with http.stream("POST", URL, json=body("openai/fake-preamble-error")) as r:
        raw = r.read()
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("application/json")
    assert "failed mid-burst" in json.loads(raw)["error"]["message"]
