"""End to end over real sockets: the openai and anthropic SDKs through a gateway process
to fake Anthropic, Gemini, Azure and OpenAI upstreams on loopback."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest

from tests.fakes import anthropic_upstream as fa
from tests.fakes import azure_upstream as fz
from tests.fakes import gemini_upstream as fg
from tests.fakes import openai_upstream as fo
from tests.providers import golden as g
from tests.providers.conftest import KEYS

pytestmark = pytest.mark.e2e

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
# model -> (the text the fake answers "hello" with, the tool arguments it sends)
CHAT_MODELS = {
    "anthropic/claude-fake": ("Echo: hello", fa.TOOL_JSON),
    "claude": ("Echo: hello", fa.TOOL_JSON),
    "gemini/gemini-fake": ("Echo: hello", json.dumps(fg.TOOL_ARGS)),
    "azure/gpt4o-deploy": ("Echo: hello", fz.TOOL_ARGUMENTS),
    "azure-v1": ("Echo: hello", fz.TOOL_ARGUMENTS),
    "openai/fake-echo": ("hello", fo.TOOL_ARGUMENTS),
}
TOOL_MODEL = {"openai/fake-echo": "openai/fake-tools"}


@pytest.mark.parametrize("model", sorted(CHAT_MODELS))
def test_openai_sdk_chat(oai, model):
    r = oai.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
        max_tokens=50,
    )
    assert r.choices[0].message.content == CHAT_MODELS[model][0]
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens >= r.usage.prompt_tokens


@pytest.mark.parametrize("model", sorted(CHAT_MODELS))
def test_openai_sdk_streamed_text(oai, model):
    stream = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
        usage = chunk.usage or usage
    assert text == CHAT_MODELS[model][0]
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("model", sorted(CHAT_MODELS))
def test_openai_sdk_streamed_tool_call(oai, model):
    """Done-when: the assembled arguments equal what the fake upstream sent."""
    stream = oai.chat.completions.create(
        model=TOOL_MODEL.get(model, model),
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or ():
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    sent = CHAT_MODELS[model][1]
    if model.startswith("gemini"):
        # Gemini sends args as an object: the gateway serializes it once, whole.
        assert json.loads(calls[0]["arguments"]) == json.loads(sent)
    else:
        assert calls[0]["arguments"] == sent


def test_gemini_tool_round_trip_names_the_function(oai, gemini_fake):
    first = oai.chat.completions.create(
        model="gem", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL]
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    gemini_fake.reset()
    second = oai.chat.completions.create(
        model="gem",
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'},
        ],
    )
    assert second.choices[0].message.content.startswith("Echo: ")
    (req,) = gemini_fake.requests()
    parts = req["json"]["contents"]
    assert parts[1]["parts"][0]["thoughtSignature"] == fg.SIGNATURE
    assert parts[2]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"temp_c": 18},
    }


def test_keys_and_urls_reach_each_upstream_correctly(oai, anthropic_fake, gemini_fake, azure_fake):
    for fake in (anthropic_fake, gemini_fake, azure_fake):
        fake.reset()
    for model in ("claude", "gem", "azure/gpt4o-deploy", "azure-v1"):
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    (a,) = anthropic_fake.requests()
    assert a["path"] == "/v1/messages"
    assert a["headers"]["x-api-key"] == KEYS["anthropic"]
    assert a["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in a["headers"]
    assert a["json"]["max_tokens"] == 4096 and a["json"]["model"] == "claude-fake"
    (gm,) = gemini_fake.requests()
    assert gm["path"] == "/v1beta/models/gemini-fake:generateContent"
    assert gm["headers"]["x-goog-api-key"] == KEYS["gemini"]
    assert KEYS["gemini"] not in gm["url"] and "key" not in gm["query"]
    dated, v1 = azure_fake.requests()
    assert dated["path"] == "/openai/deployments/gpt4o-deploy/chat/completions"
    assert dated["query"] == {"api-version": "2024-10-21"}
    assert v1["path"] == "/openai/v1/chat/completions" and v1["query"] == {}
    assert v1["json"]["model"] == "gpt4o-v1-deploy"
    for r in (dated, v1):
        assert r["headers"]["api-key"] == KEYS["azure"] and "authorization" not in r["headers"]


@pytest.mark.parametrize(
    ("model", "dims"),
    [("gemini/text-embedding-004", 8), ("azure/emb-deploy", 8), ("openai/fake-embed", 8)],
)
@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_openai_sdk_embeddings(oai, model, dims, fmt):
    r = oai.embeddings.create(
        model=model, input=["alpha", "beta"], dimensions=dims, encoding_format=fmt
    )
    assert [d.index for d in r.data] == [0, 1]
    vectors = [d.embedding for d in r.data]
    if fmt == "base64" and isinstance(vectors[0], str):
        vectors = [list(struct.unpack(f"<{dims}f", base64.b64decode(v))) for v in vectors]
    assert all(len(v) == dims for v in vectors)
    if model.startswith("gemini"):
        assert vectors[0] == fg.vector("alpha", dims)
    elif model.startswith("azure"):
        assert vectors[1] == fz.vector("beta", dims)
    assert r.usage.prompt_tokens > 0


def test_gemini_single_embedding_uses_embed_content(oai, gemini_fake):
    gemini_fake.reset()
    r = oai.embeddings.create(model="gemini/text-embedding-004", input="solo", dimensions=3)
    assert r.data[0].embedding == fg.vector("solo", 3)
    (req,) = gemini_fake.requests()
    assert req["path"].endswith(":embedContent")
    assert req["json"]["outputDimensionality"] == 3


# -- errors and bad input ---------------------------------------------------------------------


def test_anthropic_overloaded_is_503(oai):
    import openai

    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(
            model="anthropic/claude-overloaded", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 503
    assert info.value.body["type"] == "overloaded_error"
    assert info.value.response.headers["retry-after"] == "3"


def test_gemini_retry_info_becomes_retry_after(oai):
    import openai

    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(
            model="gemini/gemini-429", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.response.headers["retry-after"] == "7"


def test_mid_stream_error_is_an_sse_error_event(oai):
    import openai

    stream = oai.chat.completions.create(
        model="anthropic/claude-stream-error",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
    )
    text = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
    assert text == "Echo: hello"
    assert "Overloaded" in info.value.message


def test_mid_stream_error_raw_has_no_done(providers_gateway):
    body = {
        "model": "anthropic/claude-stream-error",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
    }
    r = httpx.post(providers_gateway.api + "/chat/completions", json=body, timeout=20)
    assert r.status_code == 200
    frames = [f for f in r.content.split(b"\n\n") if f]
    assert b"[DONE]" not in r.content
    last = json.loads(frames[-1][6:])
    assert last["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(
    ("extra", "param"), [({"n": 2}, "n"), ({"temperature": 1.5}, "temperature")]
)
def test_anthropic_rejects_what_it_cannot_honour(providers_gateway, anthropic_fake, extra, param):
    anthropic_fake.reset()
    body = {"model": "claude", "messages": [{"role": "user", "content": "x"}], **extra}
    r = httpx.post(providers_gateway.api + "/chat/completions", json=body, timeout=20)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and "anthropic" in err["message"] and param in err["message"]
    assert anthropic_fake.requests() == []  # nothing was sent


@pytest.mark.parametrize(
    "model", ["gemini/../../v1/files", "gemini/x?alt=json", "azure/../x", "azure/a#b", "gemini/.."]
)
def test_path_changing_model_names_are_rejected(providers_gateway, model):
    body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(providers_gateway.api + "/chat/completions", json=body, timeout=20)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model"


def test_models_listing_includes_aliases(oai):
    ids = {m.id for m in oai.models.list()}
    assert {"claude", "gem", "azure-v1"} <= ids


# -- the anthropic SDK through /v1/messages -----------------------------------------------

MESSAGES_MODELS = {
    "claude": "Echo: hello",
    "openai/fake-echo": "hello",
    "gem": "Echo: hello",
    "azure/gpt4o-deploy": "Echo: hello",
    "azure-v1": "Echo: hello",
    "mock-1": None,
}
MESSAGES_TOOL_MODEL = {"openai/fake-echo": "openai/fake-tools"}
TOOL = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("model", sorted(MESSAGES_MODELS))
def test_anthropic_sdk_text(claude, model):
    msg = claude.messages.create(
        model=model,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    text = "".join(b.text for b in msg.content if b.type == "text")
    if MESSAGES_MODELS[model] is not None:
        assert text == MESSAGES_MODELS[model]
    else:
        assert text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.output_tokens > 0


@pytest.mark.parametrize("model", sorted(MESSAGES_MODELS))
def test_anthropic_sdk_streamed_text(claude, model):
    with claude.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    if MESSAGES_MODELS[model] is not None:
        assert text == MESSAGES_MODELS[model]
    assert final.content[0].text == text
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", sorted(m for m in MESSAGES_MODELS if m != "mock-1"))
def test_anthropic_sdk_streamed_tool_use(claude, model):
    """Done-when: the anthropic SDK assembles the fake's tool arguments exactly."""
    with claude.messages.stream(
        model=MESSAGES_TOOL_MODEL.get(model, model),
        max_tokens=256,
        tools=[TOOL],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    tools = [b for b in final.content if b.type == "tool_use"]
    assert len(tools) == 1
    assert tools[0].name == "get_weather" and tools[0].id
    assert tools[0].input == {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}
    assert final.stop_reason == "tool_use"


def test_anthropic_passthrough_forwards_version_and_beta_not_key(claude, anthropic_fake):
    anthropic_fake.reset()
    claude.messages.create(
        model="claude",
        max_tokens=16,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"anthropic-beta": "fake-beta-2025-01-01", "anthropic-version": "2023-06-01"},
        extra_body={"top_k": 5},
    )
    (req,) = anthropic_fake.requests()
    assert req["headers"]["x-api-key"] == KEYS["anthropic"]
    assert req["headers"]["anthropic-beta"] == "fake-beta-2025-01-01"
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert req["json"]["model"] == "claude-fake" and req["json"]["top_k"] == 5


@pytest.mark.parametrize("model", ["claude", "gem", "azure/gpt4o-deploy", "openai/fake-echo"])
def test_anthropic_sdk_count_tokens(claude, model):
    r = claude.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "hello there"}], tools=[TOOL]
    )
    if model == "claude":
        assert r.input_tokens == fa.COUNT
    else:
        assert 5 < r.input_tokens < 200


def test_messages_errors_use_anthropic_shape(claude):
    import anthropic

    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(
            model="anthropic/claude-overloaded",
            max_tokens=16,
            messages=[{"role": "user", "content": "x"}],
        )
    assert info.value.status_code == 503
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(
            model="no-such-model", max_tokens=16, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="claude", max_tokens=0, messages=[])
    assert bad.value.body["error"]["type"] == "invalid_request_error"


def test_messages_stream_error_is_an_error_event(providers_gateway):
    body = {
        "model": "anthropic/claude-stream-error",
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    r = httpx.post(providers_gateway.url + "/v1/messages", json=body, timeout=20)
    assert r.status_code == 200
    events = [e for e in r.content.split(b"\n\n") if e]
    assert events[0].startswith(b"event: message_start")
    assert events[-1].startswith(b"event: error\ndata: ")
    assert json.loads(events[-1].split(b"data: ", 1)[1])["error"]["type"] == "overloaded_error"
    assert b"message_stop" not in r.content


def test_messages_stream_error_through_the_sdk(claude):
    import anthropic

    with (
        pytest.raises(anthropic.APIStatusError) as info,
        claude.messages.stream(
            model="anthropic/claude-stream-error",
            max_tokens=16,
            messages=[{"role": "user", "content": "hello"}],
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass
    assert "Overloaded" in str(info.value)


def test_openai_mid_stream_error_via_messages_is_an_error_event(providers_gateway):
    body = {
        "model": "openai/fake-stream-error",
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    r = httpx.post(providers_gateway.url + "/v1/messages", json=body, timeout=20)
    events = [e for e in r.content.split(b"\n\n") if e]
    assert events[0].startswith(b"event: message_start")
    assert events[-1].startswith(b"event: error\n")
    assert b"message_stop" not in r.content


def test_multiline_openai_events_via_messages_reach_the_anthropic_sdk(claude):
    text = 'two\nlines, "quoted" {x}'
    with claude.messages.stream(
        model="openai/fake-multiline",
        max_tokens=16,
        messages=[{"role": "user", "content": text}],
    ) as stream:
        got = "".join(stream.text_stream)
    assert got == text


def test_content_then_error_in_one_chunk_via_messages(providers_gateway):
    body = {
        "model": "openai/fake-burst-error",
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    r = httpx.post(providers_gateway.url + "/v1/messages", json=body, timeout=20)
    assert r.status_code == 200, r.content
    events = g.sse_events(r.content)
    text = "".join(e["delta"]["text"] for kind, e in events if kind == "content_block_delta")
    assert text == "".join(fo.BURST)
    assert events[-1][0] == "error" and "failed mid-burst" in events[-1][1]["error"]["message"]
    assert "message_stop" not in [kind for kind, _ in events]
