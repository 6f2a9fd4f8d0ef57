"""Anthropic adapter: golden files (requests, answers, streams, errors) and passthrough."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.errors import GatewayError
from tests.providers import golden as g

P = "anthropic"
MODEL = "claude-sonnet-4-5"
BASE = "https://api.anthropic.com"


def test_key_header_only():
    dep = g.make_dep(P, MODEL, BASE)
    req = dep.adapter.chat_request(dep, {"messages": [{"role": "user", "content": "x"}]}, False)
    assert g.secret_headers(req) == {"x-api-key": g.KEY}
    assert g.KEY not in str(req.url)


def test_non_json_answer_is_502():
    dep = g.make_dep(P, MODEL, BASE)
    for content in (b"<html>oops</html>", b"", b'{"content": 5}'):
        with pytest.raises(GatewayError) as info:
            dep.adapter.chat_response(dep, content)
        assert info.value.status == 502
        assert "anthropic" in info.value.message


def test_embeddings_are_a_400():
    dep = g.make_dep(P, MODEL, BASE)
    with pytest.raises(GatewayError) as info:
        dep.adapter.embeddings_request(dep, {"model": "x", "input": "y"})
    assert info.value.status == 400
    assert "anthropic" in info.value.message


# -- /v1/messages passthrough -----------------------------------------------------------


def test_messages_passthrough_request_forwards_version_and_beta_not_key():
    dep = g.make_dep(P, MODEL, BASE)
    body = {
        "model": "alias",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    client = {
        "anthropic-version": "2024-01-01",
        "anthropic-beta": "prompt-caching-2024-07-31,files-api-2025-04-14",
        "x-api-key": "client-key-must-not-travel",
    }
    req = dep.adapter.messages_request(dep, body, True, client)
    view = g.request_view(req)
    assert view["url"] == "https://api.anthropic.com/v1/messages"
    assert view["headers"]["anthropic-version"] == "2024-01-01"
    assert view["headers"]["anthropic-beta"] == client["anthropic-beta"]
    assert view["body"] == {**body, "model": MODEL, "stream": True}
    assert g.secret_headers(req) == {"x-api-key": g.KEY}
    assert b"client-key-must-not-travel" not in b"".join(v for _, v in req.headers.raw)


def test_messages_passthrough_defaults_and_rejects_bad_header_values():
    dep = g.make_dep(P, MODEL, BASE)
    body = {"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    req = dep.adapter.messages_request(dep, body, False, {"anthropic-beta": "x\x7fy"})
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in req.headers


def test_count_tokens_request():
    dep = g.make_dep(P, MODEL, "https://proxy.example/anthropic/v1/")
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    req = dep.adapter.count_tokens_request(dep, body, {})
    assert str(req.url) == "https://proxy.example/anthropic/v1/messages/count_tokens"
    assert json.loads(req.content)["model"] == MODEL


def test_messages_response_usage():
    dep = g.make_dep(P, MODEL, BASE)
    content = json.dumps(g.load(g.DATA / P / "response_text.json")["provider"]).encode()
    out, usage = dep.adapter.messages_response(dep, content)
    assert out == content
    assert (usage.prompt_tokens, usage.completion_tokens) == (2110, 50)


@pytest.mark.parametrize("name", ["stream_text", "stream_tools", "stream_crlf"])
def test_passthrough_stream_relays_events(name):
    raw = (g.DATA / P / f"{name}.sse").read_bytes()
    dep = g.make_dep(P, MODEL, BASE)

    def once(pieces):
        t = dep.adapter.messages_stream(dep)
        frames = g.run_stream(t, pieces)
        assert t.done
        return b"".join(frames), t.usage

    whole, usage = once([raw])
    events = [e for e in whole.split(b"\n\n") if e]
    names = [e.split(b"\n")[0] for e in events]
    assert names[0] == b"event: message_start"
    assert names[-1] == b"event: message_stop"
    for e in events:
        head, data = e.split(b"\n")
        assert json.loads(data[6:])["type"] == head[7:].decode()
    assert usage is not None and usage.completion_tokens > 0
    for pieces in g.splits(raw):
        assert once(pieces) == (whole, usage)


@pytest.mark.parametrize(
    ("name", "status"), [("stream_overloaded", 503), ("stream_cut", 502), ("stream_not_sse", 502)]
)
def test_passthrough_stream_failures(name, status):
    raw = (g.DATA / P / f"{name}.sse").read_bytes()
    dep = g.make_dep(P, MODEL, BASE)
    with pytest.raises(g.Raised) as info:
        g.run_stream(dep.adapter.messages_stream(dep), [raw])
    assert info.value.err.status == status


def test_models_listing_translation():
    dep = g.make_dep(P, MODEL, BASE)
    req = dep.adapter.models_request(dep)
    assert req.method == "GET" and str(req.url) == "https://api.anthropic.com/v1/models?limit=1000"
    content = json.dumps(
        {
            "data": [
                {
                    "type": "model",
                    "id": "claude-sonnet-4-5",
                    "display_name": "Claude Sonnet 4.5",
                    "created_at": "2025-09-29T00:00:00Z",
                },
                {"type": "model", "id": "claude-x", "created_at": "bogus"},
            ],
            "has_more": False,
        }
    ).encode()
    listed = json.loads(dep.adapter.models_response(dep, content))
    assert listed["object"] == "list"
    assert [(m["id"], m["created"], m["owned_by"]) for m in listed["data"]] == [
        ("claude-sonnet-4-5", 1759104000, "anthropic"),
        ("claude-x", 0, "anthropic"),
    ]


def test_rate_limit_headers_survive_error_mapping():
    dep = g.make_dep(P, MODEL, BASE)
    err = dep.adapter.map_error(
        dep, 429, httpx.Headers({"retry-after": "5", "x-should-retry": "true"}), b"{}"
    )
    assert err.headers == {"retry-after": "5", "retry-after-ms": "5000", "x-should-retry": "true"}
