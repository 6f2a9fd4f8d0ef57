"""Gemini adapter: golden files, key placement, path safety, signatures, embeddings."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from gateway.errors import GatewayError
from gateway.translate import gemini_response as tr
from gateway.translate.common import counter_ids
from tests.providers import golden as g

P = "gemini"
MODEL = "gemini-2.0-flash"
BASE = "https://generativelanguage.googleapis.com/v1beta"


def test_key_travels_only_in_header():
    dep = g.make_dep(P, MODEL, BASE)
    body = {"messages": [{"role": "user", "content": "x"}]}
    for req in (
        dep.adapter.chat_request(dep, body, False),
        dep.adapter.chat_request(dep, body, True),
        dep.adapter.embeddings_request(dep, {"input": "x"}),
        dep.adapter.models_request(dep),
    ):
        assert g.secret_headers(req) == {"x-goog-api-key": g.KEY}
        assert g.KEY not in str(req.url)
        assert "key=" not in str(req.url)


@pytest.mark.parametrize(
    "model",
    ["a/b", "../x", "x?alt=json", "x#y", "..", ".", "x:y", "x y", "é", "x%2F", "", "a" * 129],
)
def test_unsafe_model_names_are_rejected(model):
    with pytest.raises(GatewayError) as info:
        g.make_dep(P, model, BASE)
    assert info.value.status == 400 and info.value.param == "model"


def test_models_prefix_is_accepted():
    dep = g.make_dep(P, "models/gemini-2.5-pro-preview-05-06", BASE)
    assert str(dep.cache["chat_url"]).endswith(
        "/models/gemini-2.5-pro-preview-05-06:generateContent"
    )


def test_thought_signature_round_trip():
    """A streamed functionCall's signature comes back to Gemini on the next turn."""
    dep = g.make_dep(P, MODEL, BASE)
    raw = (g.DATA / P / "stream_tools.sse").read_bytes()
    frames = g.run_stream(dep.adapter.chat_stream(dep, False), [raw])
    calls = []
    for f in frames:
        if f.startswith(b"data: {"):
            for c in json.loads(f[6:])["choices"]:
                calls.extend(c["delta"].get("tool_calls") or ())
    first = calls[0]
    assert first["id"].endswith(tr.SIGNATURE_SEP + "CiQBVAm7c2ln")
    assert tr.SIGNATURE_SEP not in calls[1]["id"]
    assert len({c["id"] for c in calls}) == 3
    follow_up = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "tool_calls": [{**first, "function": first["function"]}]},
            {"role": "tool", "tool_call_id": first["id"], "content": "sunny"},
        ]
    }
    body = json.loads(dep.adapter.chat_request(dep, follow_up, False).content)
    part = body["contents"][1]["parts"][0]
    assert part["thoughtSignature"] == "CiQBVAm7c2ln"
    assert part["functionCall"] == {
        "name": "get_weather",
        "args": {"city": "Paris", "unit": "celsius"},
    }
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_stream_ids_are_deterministic_with_a_counter():
    raw = (g.DATA / P / "stream_tools.sse").read_bytes()
    t = tr.GeminiStream(MODEL, False, make_id=counter_ids(), created=1)
    frames = g.run_stream(t, [raw])
    ids = [
        call["id"]
        for f in frames
        if f.startswith(b"data: {")
        for c in json.loads(f[6:])["choices"]
        for call in c["delta"].get("tool_calls") or ()
    ]
    assert ids == ["call_0__thought__CiQBVAm7c2ln", "call_1", "call_2"]


def test_non_json_answer_is_502():
    dep = g.make_dep(P, MODEL, BASE)
    for content in (b"<html>", b"", b"[1, 2]"):
        with pytest.raises(GatewayError) as info:
            dep.adapter.chat_response(dep, content)
        assert info.value.status == 502 and "gemini" in info.value.message


def test_error_object_in_a_200_answer():
    dep = g.make_dep(P, MODEL, BASE)
    content = json.dumps(
        {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    )
    with pytest.raises(GatewayError) as info:
        dep.adapter.chat_response(dep, content.encode())
    assert info.value.status == 429


# -- embeddings -------------------------------------------------------------------------


def _embed(dep, body, answer):
    req = dep.adapter.embeddings_request(dep, body)
    out, usage = dep.adapter.embeddings_response(dep, body, json.dumps(answer).encode())
    return req, json.loads(out), usage


def test_embed_single_string_float():
    dep = g.make_dep(P, "gemini-embedding-001", BASE)
    req, out, usage = _embed(
        dep,
        {"model": "e", "input": "hello world", "dimensions": 3},
        {"embedding": {"values": [0.1, -0.2, 0.3]}},
    )
    assert str(req.url) == f"{BASE}/models/gemini-embedding-001:embedContent"
    assert json.loads(req.content) == {
        "content": {"parts": [{"text": "hello world"}]},
        "outputDimensionality": 3,
    }
    assert out == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]}],
        "model": "gemini-embedding-001",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    assert usage.prompt_tokens == 2


def test_embed_batch_base64():
    dep = g.make_dep(P, "text-embedding-004", BASE)
    vectors = [[0.5, 0.25], [-1.0, 2.0]]
    req, out, _ = _embed(
        dep,
        {"model": "e", "input": ["a", "bb"], "encoding_format": "base64"},
        {"embeddings": [{"values": v} for v in vectors]},
    )
    assert str(req.url) == f"{BASE}/models/text-embedding-004:batchEmbedContents"
    assert json.loads(req.content) == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "bb"}]}},
        ]
    }
    got = [struct.unpack("<2f", base64.b64decode(d["embedding"])) for d in out["data"]]
    assert [list(v) for v in got] == vectors
    assert [d["index"] for d in out["data"]] == [0, 1]


def test_embed_token_arrays_are_a_400():
    dep = g.make_dep(P, "text-embedding-004", BASE)
    with pytest.raises(GatewayError) as info:
        dep.adapter.embeddings_request(dep, {"model": "e", "input": [[1, 2, 3]]})
    assert info.value.status == 400 and info.value.param == "input"
    assert "gemini" in info.value.message


def test_models_listing_translation():
    dep = g.make_dep(P, MODEL, BASE)
    req = dep.adapter.models_request(dep)
    assert str(req.url) == f"{BASE}/models?pageSize=1000"
    content = json.dumps(
        {"models": [{"name": "models/gemini-2.0-flash"}, {"name": "models/embedding-001"}]}
    ).encode()
    listed = json.loads(dep.adapter.models_response(dep, content))
    assert [m["id"] for m in listed["data"]] == ["gemini-2.0-flash", "embedding-001"]
