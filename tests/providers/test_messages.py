"""/v1/messages translation: Anthropic requests to OpenAI chat, answers and streams back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from gateway.errors import GatewayError, UpstreamStatus
from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.azure import AzureStream
from gateway.providers.openai import OpenAIStream
from gateway.translate import messages as m
from gateway.translate import messages_stream as ms
from gateway.translate.anthropic import AnthropicStream
from gateway.translate.common import counter_ids
from gateway.translate.gemini_response import GeminiStream
from tests.providers import golden as g

D = g.DATA / "messages"
REQUESTS = sorted(D.glob("request_*.json"))
RESPONSES = sorted(D.glob("response_*.json"))


@pytest.mark.parametrize("path", REQUESTS, ids=g.ids(REQUESTS))
def test_request(path):
    case = g.load(path)
    if "error" in case:
        with pytest.raises(GatewayError) as info:
            m.messages_to_chat(case["anthropic"], False, "gemini")
        assert info.value.status == case["error"]["status"]
        assert info.value.param == case["error"]["param"]
        return
    assert (
        m.messages_to_chat(case["anthropic"], bool(case.get("stream")), "gemini") == case["expect"]
    )


@pytest.mark.parametrize("path", RESPONSES, ids=g.ids(RESPONSES))
def test_response(path):
    case = g.load(path)
    out = m.chat_to_message(json.dumps(case["openai"]).encode(), "alias", "openai", counter_ids())
    assert json.loads(out) == case["expect"]


def test_response_with_broken_tool_arguments_is_502():
    body = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{x"}}]
                },
            }
        ]
    }
    with pytest.raises(GatewayError) as info:
        m.chat_to_message(json.dumps(body).encode(), "a", "azure")
    assert info.value.status == 502 and "azure" in info.value.message


def test_response_not_json_is_502():
    with pytest.raises(GatewayError) as info:
        m.chat_to_message(b"<html>", "a", "openai")
    assert info.value.status == 502


@pytest.mark.parametrize(
    ("err", "etype"),
    [
        (GatewayError("bad", status=400, type="invalid_request_error"), "invalid_request_error"),
        (GatewayError("no model", status=404, type="invalid_request_error"), "not_found_error"),
        (GatewayError("odd", status=422, type="invalid_request_error"), "invalid_request_error"),
        (GatewayError("x", status=404, type="not_found_error"), "not_found_error"),
        (
            UpstreamStatus(
                "o", provider="p", upstream_status=529, status=503, type="overloaded_error"
            ),
            "overloaded_error",
        ),
        (UpstreamStatus("u", provider="p", upstream_status=503, status=503), "overloaded_error"),
        (UpstreamStatus("r", provider="p", upstream_status=429, status=429), "rate_limit_error"),
        (GatewayError("t", status=504, type="timeout"), "timeout_error"),
        (GatewayError("b", status=502, type="upstream_error"), "api_error"),
    ],
)
def test_error_shapes(err, etype):
    body = json.loads(m.error_body(err))
    assert body == {"type": "error", "error": {"type": etype, "message": err.message}}
    frame = m.error_event(err)
    assert frame.startswith(b"event: error\ndata: {") and frame.endswith(b"\n\n")


# -- streams ------------------------------------------------------------------------------

STREAM_SOURCES: dict[str, tuple[Path, Any]] = {
    "openai_text": (
        g.DATA.parent / "sse" / "openai_chat.sse",
        lambda: OpenAIStream("openai", True),
    ),
    "azure_tools": (g.DATA / "azure" / "stream_tools.sse", lambda: AzureStream(True)),
    "azure_filter": (g.DATA / "azure" / "stream_filter.sse", lambda: AzureStream(True)),
    "gemini_tools": (
        g.DATA / "gemini" / "stream_tools.sse",
        lambda: GeminiStream("gemini-x", True, make_id=counter_ids(), created=1),
    ),
    "gemini_blocked": (
        g.DATA / "gemini" / "stream_prompt_blocked.sse",
        lambda: GeminiStream("gemini-x", True, make_id=counter_ids(), created=1),
    ),
    "anthropic_tools": (
        g.DATA / "anthropic" / "stream_tools.sse",
        lambda: AnthropicStream(True, created=1),
    ),
    "anthropic_crlf": (
        g.DATA / "anthropic" / "stream_crlf.sse",
        lambda: AnthropicStream(True, created=1),
    ),
}


def parse_events(frames: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for raw in b"".join(frames).split(b"\n\n"):
        if not raw:
            continue
        head, data = raw.split(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: ")
        obj = json.loads(data[6:])
        assert obj["type"] == head[7:].decode()
        out.append((obj["type"], obj))
    return out


def check_sequence(events: list[tuple[str, dict[str, Any]]]) -> None:
    """A valid Anthropic Messages event sequence (blocks in order, one open at a time)."""
    kinds = [k for k, _ in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta" and kinds.count("message_delta") == 1
    open_block: tuple[int, str] | None = None
    started = 0
    for kind, ev in events[1:-2]:
        if kind == "content_block_start":
            assert open_block is None and ev["index"] == started
            open_block = (ev["index"], ev["content_block"]["type"])
            started += 1
        elif kind == "content_block_delta":
            assert open_block is not None and ev["index"] == open_block[0]
            want = {"text": "text_delta", "tool_use": "input_json_delta"}[open_block[1]]
            assert ev["delta"]["type"] == want
        elif kind == "content_block_stop":
            assert open_block is not None and ev["index"] == open_block[0]
            open_block = None
        else:
            pytest.fail(f"unexpected {kind}")
    assert open_block is None


def assemble(events: list[tuple[str, dict[str, Any]]]) -> Any:
    """The final message as the anthropic SDK's own accumulator builds it."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for _kind, ev in events:
        snapshot = accumulate_event(event=ev, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


@pytest.mark.parametrize("name", sorted(STREAM_SOURCES))
def test_stream_becomes_valid_anthropic_events(name):
    path, make_inner = STREAM_SOURCES[name]
    raw = path.read_bytes()

    def once(pieces):
        inner = make_inner()
        t = ms.AnthropicEventStream(inner, "alias", "test", make_id=counter_ids())
        frames = g.run_stream(t, pieces)
        assert t.done
        # the same stream through the inner translator alone, for comparison
        return b"".join(frames), t.usage

    whole, usage = once([raw])
    events = parse_events([whole])
    check_sequence(events)
    msg = assemble(events)
    openai = g.summarize(g.run_stream(make_inner(), [raw]))
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert text == openai["text"].get("0", "")
    tools = [(b.id, b.name, b.input) for b in msg.content if b.type == "tool_use"]
    assert tools == [
        (c["id"], c["name"], c["arguments"]) for c in openai["tool_calls"].get("0", [])
    ]
    finish = openai["finish_reason"]["0"]
    assert msg.stop_reason == m.STOP_REASONS[finish]
    assert msg.model == "alias" and msg.id == "msg_0"
    if usage is not None:
        assert msg.usage.output_tokens == usage.completion_tokens
        cached = (usage.prompt_tokens_details or {}).get("cached_tokens", 0)
        write = (usage.prompt_tokens_details or {}).get("cache_write_tokens", 0)
        assert msg.usage.input_tokens + cached + write == usage.prompt_tokens
        assert msg.usage.cache_read_input_tokens == cached
    for pieces in g.splits(raw):
        assert once(pieces) == (whole, usage)


def test_anthropic_round_trip_keeps_the_original_events_meaning():
    """Anthropic SSE -> OpenAI chunks -> Anthropic events: same text, tools, stop reason."""
    raw = (g.DATA / "anthropic" / "stream_tools.sse").read_bytes()
    direct = g.run_stream(AnthropicAdapter().messages_stream(None), [raw])  # type: ignore[arg-type]
    via = g.run_stream(
        ms.AnthropicEventStream(AnthropicStream(True), "alias", "anthropic", counter_ids()), [raw]
    )
    a, b = assemble(parse_events(direct)), assemble(parse_events(via))
    assert [(x.type, getattr(x, "text", None), getattr(x, "input", None)) for x in b.content] == [
        (x.type, getattr(x, "text", None), getattr(x, "input", None))
        for x in a.content
        if x.type != "thinking"
    ]
    assert a.stop_reason == b.stop_reason == "tool_use"
    assert (a.usage.input_tokens, a.usage.output_tokens, a.usage.cache_read_input_tokens) == (
        b.usage.input_tokens,
        b.usage.output_tokens,
        b.usage.cache_read_input_tokens,
    )


@pytest.mark.parametrize(
    ("path", "make_inner", "status"),
    [
        (g.DATA / "gemini" / "stream_error.sse", lambda: GeminiStream("g", True), 503),
        (g.DATA / "gemini" / "stream_cut.sse", lambda: GeminiStream("g", True), 502),
        (g.DATA / "anthropic" / "stream_overloaded.sse", lambda: AnthropicStream(True), 503),
        (g.DATA / "azure" / "stream_cut.sse", lambda: AzureStream(True), 502),
    ],
)
def test_stream_failures_propagate(path, make_inner, status):
    t = ms.AnthropicEventStream(make_inner(), "alias", "p", counter_ids())
    with pytest.raises(g.Raised) as info:
        g.run_stream(t, [path.read_bytes()])
    assert info.value.err.status == status
    events = parse_events(info.value.frames)
    assert events[0][0] == "message_start"
    assert "message_stop" not in [k for k, _ in events]


def test_empty_answer_is_still_a_valid_sequence():
    inner = OpenAIStream("openai", True)
    t = ms.AnthropicEventStream(inner, "alias", "openai", counter_ids())
    raw = (
        b'data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
        b'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    events = parse_events(g.run_stream(t, [raw]))
    check_sequence(events)
    assert [k for k, _ in events] == ["message_start", "message_delta", "message_stop"]
