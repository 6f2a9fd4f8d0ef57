"""The openai SDK through a running gateway: chat (plain and streamed), tools,
embeddings and the model list, checked on both sides (the SDK's view and what the
fake upstream received)."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ALIASES
from tests.fakes.openai_upstream import (
    MODELS,
    TOOL_ARGUMENTS,
    TOOL_CALL_ID,
    TOOL_NAME,
    embedding_vector,
)
from tests.harness import PROVIDER_KEY, FakeUpstream, GatewayProc

pytestmark = pytest.mark.e2e

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Weather forecast for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "array", "items": {"type": "integer"}},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]
TOOL_CHOICE = {"type": "function", "function": {"name": TOOL_NAME}}


def prompt() -> str:
    return f"hello from the e2e suite, marker {uuid.uuid4().hex[:12]}; ünïcødé ✓"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


# -- chat, non-streaming -------------------------------------------------------------------


@pytest.mark.parametrize("model", ["openai/fake-echo", "chat"])
def test_chat_echo(client: openai.OpenAI, fake_upstream: FakeUpstream, model: str) -> None:
    text = prompt()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=user(text), temperature=0.2, max_tokens=50
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == text
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    assert raw.headers["x-gateway-provider"] == "openai"

    sent = fake_upstream.only(text)
    assert sent["json"]["model"] == "fake-echo"  # the upstream model, not the alias
    assert sent["json"]["messages"] == user(text)
    assert sent["json"]["temperature"] == 0.2 and sent["json"]["max_tokens"] == 50
    # the gateway's own key goes upstream; the client's key never does
    assert sent["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert "anything" not in json.dumps(sent["headers"])


def test_client_headers_are_not_forwarded(
    client: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    text = prompt()
    resp = client.chat.completions.create(
        model="chat",
        messages=user(text),
        extra_headers={"x-fake-scenario": "fake-500", "x-secret-header": "do-not-forward"},
    )
    assert resp.choices[0].message.content == text  # the scenario header never arrived
    headers = fake_upstream.only(text)["headers"]
    assert "x-fake-scenario" not in headers and "x-secret-header" not in headers
    assert not any(h.startswith("x-stainless") for h in headers)


def test_fake_upstream_is_honest(fake_upstream: FakeUpstream) -> None:
    body = {"model": "fake-echo", "messages": user("direct")}
    url = fake_upstream.url + "/chat/completions"
    assert httpx.post(url, json=body, timeout=5).status_code == 401
    wrong = {"authorization": "Bearer not-the-key"}
    assert httpx.post(url, json=body, headers=wrong, timeout=5).status_code == 401
    right = {"authorization": f"Bearer {PROVIDER_KEY}", "x-fake-scenario": "fake-500"}
    assert httpx.post(url, json=body, headers=right, timeout=5).status_code == 500


def test_unknown_fields_are_forwarded(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    text = prompt()
    client.chat.completions.create(
        model="chat",
        messages=user(text),
        extra_body={"metadata": {"team": "e2e"}, "some_future_option": [1, {"a": None}]},
    )
    sent = fake_upstream.only(text)["json"]
    assert sent["metadata"] == {"team": "e2e"}
    assert sent["some_future_option"] == [1, {"a": None}]


def test_mock_alias_is_deterministic(client: openai.OpenAI) -> None:
    text = prompt()
    first = client.chat.completions.create(model="demo", messages=user(text))
    second = client.chat.completions.create(model="demo", messages=user(text))
    content = first.choices[0].message.content
    assert content and len(content.split()) == 12  # reply_tokens from the config
    assert second.choices[0].message.content == content
    assert first.usage is not None and first.usage.completion_tokens == 12


def test_bare_mock_model_without_any_key(mock_gateway: GatewayProc) -> None:
    with mock_gateway.openai() as c:
        raw = c.chat.completions.with_raw_response.create(
            model="mock-1", messages=user("hi there"), max_tokens=5
        )
        resp = raw.parse()
        assert raw.headers["x-gateway-provider"] == "mock"
        assert resp.model == "mock-1"
        assert resp.choices[0].message.content
        assert len(resp.choices[0].message.content.split()) == 5
        assert resp.choices[0].finish_reason == "length"
        chunks = list(
            c.chat.completions.create(
                model="mock-fast",
                messages=user("hi there"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert chunks[-1].usage is not None and chunks[-1].choices == []
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="openai/gpt-4o", messages=user("hi"))


# -- chat, streaming -----------------------------------------------------------------------


def test_stream_with_usage(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    text = prompt()
    stream = client.chat.completions.create(
        model="chat", messages=user(text), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    assert len(chunks) > 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    sent = fake_upstream.only(text)["json"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("options", [None, {"include_usage": False}], ids=["absent", "false"])
def test_stream_without_usage(
    client: openai.OpenAI, fake_upstream: FakeUpstream, options: dict[str, Any] | None
) -> None:
    text = prompt()
    extra: dict[str, Any] = {"stream_options": options} if options is not None else {}
    stream = client.chat.completions.create(model="chat", messages=user(text), stream=True, **extra)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # the usage-only chunk was dropped
    # the gateway still asked for usage upstream, to count tokens
    sent = fake_upstream.only(text)["json"]
    assert sent["stream_options"]["include_usage"] is True


def test_stream_raw_sse_framing(http: httpx.Client) -> None:
    text = prompt()
    body = {"model": "chat", "messages": user(text), "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    assert events[-1] == "data: [DONE]" and raw.endswith("data: [DONE]\n\n")
    assert raw.count("[DONE]") == 1
    parsed = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in parsed) == text


def test_stream_mock_alias(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="demo", messages=user("x"), stream=True))
    words = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()
    assert len(words) == 12


# -- tools -----------------------------------------------------------------------------------


def test_tools_non_stream(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    text = prompt()
    resp = client.chat.completions.create(
        model="tools", messages=user(text), tools=TOOLS, tool_choice=TOOL_CHOICE
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].id == TOOL_CALL_ID and calls[0].type == "function"
    assert calls[0].function.name == TOOL_NAME
    assert calls[0].function.arguments == TOOL_ARGUMENTS
    sent = fake_upstream.only(text)["json"]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == TOOL_CHOICE
    assert sent["model"] == "fake-tools"


def test_tools_stream_fragments_assemble(
    client: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    text = prompt()
    stream = client.chat.completions.create(
        model="tools",
        messages=user(text),
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        stream=True,
    )
    calls: dict[int, dict[str, Any]] = {}
    fragments = 0
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for tc in choice.delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                call["id"] = tc.id
            if tc.function and tc.function.name:
                call["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
                fragments += 1
    assert finish == "tool_calls"
    assert calls == {0: {"id": TOOL_CALL_ID, "name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}}
    assert fragments > 1, "the arguments were not split across chunks"
    assert json.loads(calls[0]["arguments"]) == {
        "city": "Paris",
        "unit": "celsius",
        "days": [1, 2, 3],
    }
    sent = fake_upstream.only(text)["json"]
    assert sent["tools"] == TOOLS
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False


def test_tool_result_round_trip(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    text = prompt()
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": '{"temp": 21}'},
        {"role": "user", "content": text},
    ]
    resp = client.chat.completions.create(model="chat", messages=history, tools=TOOLS)
    assert resp.choices[0].message.content == text
    assert fake_upstream.only(text)["json"]["messages"] == history


# -- embeddings -----------------------------------------------------------------------------


def test_embeddings_float_with_dimensions(
    client: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    marker = prompt()
    inputs = [marker, "second input"]
    resp = client.embeddings.create(
        model="embed", input=inputs, encoding_format="float", dimensions=16
    )
    assert [d.index for d in resp.data] == [0, 1]
    for d, item in zip(resp.data, inputs, strict=True):
        assert d.embedding == embedding_vector(json.dumps(item), 16)
    assert resp.usage.total_tokens > 0
    sent = fake_upstream.only(marker, "/v1/embeddings")["json"]
    assert sent == {
        "model": "fake-embed",
        "input": inputs,
        "dimensions": 16,
        "encoding_format": "float",
    }


def test_embeddings_base64_decoded_by_sdk(
    client: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    marker = prompt()
    # without encoding_format the SDK asks for base64 and decodes it itself
    resp = client.embeddings.create(model="openai/fake-embed", input=marker, dimensions=12)
    assert resp.data[0].embedding == embedding_vector(json.dumps(marker), 12)
    sent = fake_upstream.only(marker, "/v1/embeddings")["json"]
    assert sent["encoding_format"] == "base64" and sent["dimensions"] == 12


def test_embeddings_base64_raw(http: httpx.Client) -> None:
    marker = prompt()
    r = http.post(
        "/v1/embeddings",
        json={"model": "embed", "input": [marker], "encoding_format": "base64", "dimensions": 4},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-provider"] == "openai"
    emb = r.json()["data"][0]["embedding"]
    assert isinstance(emb, str)
    assert list(struct.unpack("<4f", base64.b64decode(emb))) == embedding_vector(
        json.dumps(marker), 4
    )


def test_embeddings_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="embed", input="x", dimensions=0)
    assert exc.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="embed", input=[])
    assert exc.value.param == "input"


# -- models ------------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models]
    assert len(ids) == len(set(ids)), "duplicate model ids"
    assert set(ALIASES) <= set(ids)
    assert {f"openai/{m}" for m in MODELS} <= set(ids)
    assert {"mock-1", "mock-fast", "mock-embedding"} <= set(ids)  # mock is on (alias demo)
    owners = {m.id: m.owned_by for m in models}
    assert owners["chat"] == "gateway" and owners["openai/fake-echo"] == "openai"
    assert all(m.object == "model" for m in models)


def test_models_list_mock_only(mock_gateway: GatewayProc) -> None:
    with mock_gateway.openai() as c:
        ids = [m.id for m in c.models.list()]
    assert sorted(ids) == ["mock-1", "mock-embedding", "mock-fast"]
