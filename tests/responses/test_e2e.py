"""``/v1/responses`` end to end: the official openai SDK against a real gateway process, each
provider faked on loopback in its own wire format."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayProc, metric_sum
from tests.providers.golden import sse_events
from tests.responses.conftest import Recorded, sdk

PROVIDERS = {  # alias -> (the provider the gateway names, the answer to "hello")
    "gpt": ("openai", "Echo: hello (user turns: 1)"),
    "azure-resp": ("azure", "Echo: hello (user turns: 1)"),
    "chatonly": ("openai", "hello"),
    "claude": ("anthropic", "Echo: hello"),
    "gem": ("gemini", "Echo: hello"),
    "mocked": ("mock", None),
}
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


def _check_sequence(events: list[Any]) -> None:
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(numbers))), numbers
    assert events[0].type == "response.created"
    assert events[1].type == "response.in_progress"


@pytest.mark.parametrize("alias", list(PROVIDERS))
def test_create_and_stream_on_every_provider(
    alias: str, client: openai.OpenAI, fakes: dict[str, Recorded]
) -> None:
    provider, answer = PROVIDERS[alias]
    raw = client.responses.with_raw_response.create(
        model=alias, input="hello", instructions="Answer briefly.", max_output_tokens=64
    )
    assert raw.headers["x-gateway-provider"] == provider
    r = raw.parse()
    assert r.object == "response" and r.status == "completed"
    assert r.id.startswith("resp_")
    if answer is not None:
        assert r.output_text == answer
    assert r.output_text
    u = r.usage
    assert u is not None and u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert u.input_tokens_details.cached_tokens >= 0
    assert u.output_tokens_details.reasoning_tokens >= 0

    with client.responses.stream(model=alias, input="hello", max_output_tokens=64) as stream:
        events = list(stream)
        final = stream.get_final_response()
    _check_sequence(events)
    types = [e.type for e in events]
    assert types[-1] == "response.completed"
    assert "response.output_text.delta" in types and "response.output_text.done" in types
    assert final.output_text == r.output_text if answer is not None else final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0
    assert final.id == events[0].response.id


def test_passthrough_forwards_the_body_with_only_model_replaced(
    client: openai.OpenAI, fakes: dict[str, Recorded]
) -> None:
    fake = fakes["responses"]
    fake.reset()
    client.responses.create(
        model="gpt",
        input="hello",
        instructions="Answer briefly.",
        metadata={"k": "v"},
        extra_body={"some_new_field": {"x": 1}},
    )
    client.responses.create(model="azure-resp", input="hello")
    openai_req, azure_req = fake.requests()
    assert openai_req["path"] == "/v1/responses"
    assert openai_req["json"] == {
        "model": "resp-echo",
        "input": "hello",
        "instructions": "Answer briefly.",
        "metadata": {"k": "v"},
        "some_new_field": {"x": 1},
    }
    assert openai_req["headers"]["authorization"] == "Bearer rk-resp-secret"
    assert azure_req["path"] == "/openai/v1/responses"
    assert azure_req["headers"]["api-key"] == "rk-resp-secret"
    assert azure_req["json"]["model"] == "resp-echo"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("alias", ["claude", "gem", "gpt"])
def test_two_turn_tool_loop(
    alias: str, stream: bool, client: openai.OpenAI, fakes: dict[str, Recorded]
) -> None:
    def create(**kw: Any) -> Any:
        if not stream:
            return client.responses.create(model=alias, tools=TOOLS, **kw)  # type: ignore[arg-type]
        with client.responses.stream(model=alias, tools=TOOLS, **kw) as s:  # type: ignore[arg-type]
            events = list(s)
            _check_sequence(events)
            return s.get_final_response()

    for fake in fakes.values():
        fake.reset()
    first = create(input="What is the weather in Paris?")
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather"
    assert call.call_id and call.id
    assert isinstance(json.loads(call.arguments), dict)
    assert json.loads(call.arguments)["city"] == "Paris"

    second = create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert second.status == "completed"
    assert second.output_text, second.output
    assert not [i for i in second.output if i.type == "function_call"]
    assert second.previous_response_id == first.id
    if alias == "claude":
        body = fakes["anthropic"].posts("/v1/messages")[-1]["json"]
        assistant, result = body["messages"][-2:]
        tool_use = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert tool_use == [
            {
                "type": "tool_use",
                "id": call.call_id,
                "name": "get_weather",
                "input": {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]},
            }
        ]
        assert result["role"] == "user"
        assert result["content"][0]["type"] == "tool_result"
        assert result["content"][0]["tool_use_id"] == call.call_id
        assert result["content"][0]["content"] == "sunny"
        text = [{"type": "text", "text": "What is the weather in Paris?"}]
        assert body["messages"][0] == {"role": "user", "content": text}
    elif alias == "gem":
        body = fakes["gemini"].requests()[-1]["json"]
        model_turn, user_turn = body["contents"][-2:]
        fc = [p for p in model_turn["parts"] if "functionCall" in p]
        assert fc and fc[0]["functionCall"]["name"] == "get_weather"
        assert fc[0].get("thoughtSignature")  # Gemini's signature went back with the call
        fr = user_turn["parts"][0]["functionResponse"]
        assert fr["name"] == "get_weather"
    else:  # OpenAI keeps its own state: the id passes through, the input is only the new item
        body = fakes["responses"].posts("/v1/responses")[-1]["json"]
        assert body["previous_response_id"] == first.id
        assert body["input"] == [
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
        ]
        assert second.output_text == "The weather: sunny"


@pytest.mark.parametrize("alias", ["claude", "gem", "chatonly", "mocked"])
@pytest.mark.parametrize(
    "tool", ["web_search", "file_search", "code_interpreter", "computer_use_preview"]
)
def test_builtin_tools_are_a_400_naming_the_tool(
    alias: str, tool: str, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=alias, input="hi", tools=[{"type": tool}])  # type: ignore[list-item]
    err = info.value
    assert err.status_code == 400
    assert tool in err.message
    assert err.body["param"] == "tools[0]"  # type: ignore[index]


@pytest.mark.parametrize(
    "alias", ["claude-broken", "chatonly-broken", "gpt-stream-failed", "gpt-stream-error"]
)
def test_stream_that_fails_midway_ends_with_error_and_response_failed(
    alias: str, client: openai.OpenAI, resp_gateway: GatewayProc
) -> None:
    events = list(client.responses.create(model=alias, input="hello there, friend", stream=True))
    types = [e.type for e in events]
    assert "response.output_text.delta" in types
    assert types[-2:] == ["error", "response.failed"], types
    assert "response.completed" not in types
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(numbers)))
    failed = events[-1].response
    assert failed.id == events[0].response.id
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.code == "server_error"
    assert events[-2].message  # the error event says what broke

    with client.responses.stream(model=alias, input="hello there, friend") as stream:
        seen = [e.type for e in stream]
        assert seen[-1] == "response.failed"
        with pytest.raises(RuntimeError):
            stream.get_final_response()

    # the raw bytes: whole events, every one named, no [DONE]
    with httpx.stream(
        "POST",
        resp_gateway.api + "/responses",
        json={"model": alias, "input": "hello there, friend", "stream": True},
        timeout=20,
    ) as resp:
        raw = b"".join(resp.iter_raw())
    parsed = sse_events(raw)
    assert all(etype == data["type"] for etype, data in parsed)
    assert b"[DONE]" not in raw


def test_failure_before_the_first_content_is_retried_elsewhere(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="gpt-preamble-error", input="hello", stream=True
    )
    assert raw.headers["x-gateway-provider"] == "anthropic"
    events = list(raw.parse())
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "Echo: hello"


def test_conversation_falls_back_to_another_provider(
    client: openai.OpenAI, fakes: dict[str, Recorded]
) -> None:
    for fake in fakes.values():
        fake.reset()
    first = client.responses.with_raw_response.create(model="conv", input="first question")
    assert first.headers["x-gateway-provider"] == "openai"
    r1 = first.parse()
    assert r1.output_text == "Echo: first question (user turns: 1)"

    # The OpenAI deployment fails on the follow-up: the fallback (Anthropic) gets the
    # conversation the gateway stored, expanded, instead of an id it cannot know.
    second = client.responses.with_raw_response.create(
        model="conv", input="second question", previous_response_id=r1.id
    )
    assert second.headers["x-gateway-provider"] == "anthropic"
    r2 = second.parse()
    assert r2.output_text == "Echo: second question"
    body = fakes["anthropic"].posts("/v1/messages")[-1]["json"]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "first question"}]},
        {"role": "assistant", "content": [{"type": "text", "text": r1.output_text}]},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]

    # Back to an OpenAI deployment with the translated response's id: it never saw that
    # id, so it gets the whole conversation and no previous_response_id.
    r3 = client.responses.create(model="gpt", input="third", previous_response_id=r2.id)
    assert r3.output_text == "Echo: third (user turns: 3)"
    sent = fakes["responses"].posts("/v1/responses")[-1]["json"]
    assert "previous_response_id" not in sent
    assert [i.get("role") for i in sent["input"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert all("id" not in i for i in sent["input"])

    # Same upstream again: the id passes through (the provider keeps its own state).
    r4 = client.responses.create(model="gpt", input="fourth", previous_response_id=r3.id)
    sent = fakes["responses"].posts("/v1/responses")[-1]["json"]
    assert sent["previous_response_id"] == r3.id
    assert sent["input"] == "fourth"
    assert r4.output_text == "Echo: fourth (user turns: 4)"


def test_identical_stateless_requests_are_cached(
    client: openai.OpenAI, fakes: dict[str, Recorded]
) -> None:
    fakes["anthropic"].reset()
    ask = {"model": "cached", "input": "cache me please"}
    first = client.responses.with_raw_response.create(**ask)  # type: ignore[arg-type]
    again = client.responses.with_raw_response.create(**ask)  # type: ignore[arg-type]
    assert first.headers["x-gateway-cache"] == "MISS"
    assert again.headers["x-gateway-cache"] == "HIT"
    assert again.parse().model_dump() == first.parse().model_dump()
    with client.responses.stream(**ask) as stream:  # type: ignore[arg-type]
        events = list(stream)
        replayed = stream.get_final_response()
    _check_sequence(events)
    assert replayed.output_text == first.parse().output_text == "Echo: cache me please"
    assert len(fakes["anthropic"].posts("/v1/messages")) == 1

    follow = client.responses.with_raw_response.create(
        model="cached", input="cache me please", previous_response_id=first.parse().id
    )
    assert follow.headers["x-gateway-cache"] == "BYPASS"
    assert len(fakes["anthropic"].posts("/v1/messages")) == 2


def test_rate_limits_count_the_whole_conversation(client: openai.OpenAI) -> None:
    long_text = "word " * 1200
    first = client.responses.create(model="limited", input=long_text, max_output_tokens=16)
    # A stateless request this small fits what is left...
    client.responses.create(model="limited", input="ok", max_output_tokens=16)
    # ...but the same words continuing the conversation carry its 1200 tokens: refused.
    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(
            model="limited", input="ok", max_output_tokens=16, previous_response_id=first.id
        )
    assert info.value.response.headers.get("retry-after")


def test_get_delete_and_replay(client: openai.OpenAI, resp_gateway: GatewayProc) -> None:
    r = client.responses.create(model="claude", input="keep this")
    got = client.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump()
    raw = httpx.get(
        f"{resp_gateway.api}/responses/{r.id}",
        params={"stream": "true"},
        headers={"authorization": "Bearer tenant-a-key"},
        timeout=10,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw.content)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert events[-1][1]["response"]["id"] == r.id
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)
    text = resp_gateway.metrics()
    assert metric_sum(text, "http_requests_total", route="/v1/responses/{id}") >= 4
    assert metric_sum(text, "http_requests_total", route="/v1/responses") >= 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "claude", "input": "x", "background": True}, "background"),
        ({"model": "claude", "input": "x", "conversation": "conv_1"}, "conversation"),
        (
            {"model": "claude", "input": "x", "previous_response_id": "not an id!"},
            "previous_response_id",
        ),
        (
            {"model": "claude", "input": "x", "previous_response_id": "resp_nope"},
            "previous_response_id",
        ),
        (
            {"model": "claude", "input": [{"type": "computer_call_output", "call_id": "c"}]},
            "input[0].type",
        ),
        ({"model": "claude", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].id"),
        ({"model": "claude", "input": "x", "temperature": 9}, "temperature"),
        ({"model": "claude", "input": 5}, "input"),
        (
            {"model": "gem", "input": "x", "tool_choice": {"type": "web_search_preview"}},
            "tool_choice",
        ),
    ],
)
def test_bad_requests_are_400s_naming_the_parameter(
    body: dict[str, Any], param: str, resp_gateway: GatewayProc
) -> None:
    resp = httpx.post(resp_gateway.api + "/responses", json=body, timeout=10)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param, err
    assert set(err) == {"message", "type", "param", "code"}


# -- state: tenants, store: false, Redis -------------------------------------------------


def _isolation(gw: GatewayProc, alias: str) -> str:
    a, b = sdk(gw, "tenant-a-key"), sdk(gw, "tenant-b-key")
    try:
        r = a.responses.create(model=alias, input="secret plans")
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.delete(r.id)
        with pytest.raises(openai.BadRequestError) as info:
            b.responses.create(model=alias, input="tell me", previous_response_id=r.id)
        assert info.value.code == "previous_response_not_found"
        assert a.responses.retrieve(r.id).id == r.id  # still there for its owner
        follow = a.responses.create(model=alias, input="and then", previous_response_id=r.id)
        assert follow.status == "completed"
        return r.id
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("alias", ["claude", "gpt"])
def test_a_tenant_never_sees_another_tenants_response(
    alias: str, resp_gateway: GatewayProc
) -> None:
    _isolation(resp_gateway, alias)


@pytest.mark.parametrize("alias", ["claude", "gpt"])
def test_store_false_keeps_nothing(
    alias: str, client: openai.OpenAI, fakes: dict[str, Recorded]
) -> None:
    r = client.responses.create(model=alias, input="forget me", store=False)
    assert r.store is False or alias == "gpt"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=alias, input="again", previous_response_id=r.id)
    with client.responses.stream(model=alias, input="forget me too", store=False) as s:
        list(s)
        streamed = s.get_final_response()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(streamed.id)


def test_redis_state_per_tenant_with_ttl_and_no_keys_in_it(
    redis_resp_gateway: tuple[GatewayProc, Any],
) -> None:
    gw, server = redis_resp_gateway
    rid = _isolation(gw, "claude")
    c = sdk(gw)
    try:
        # Two workers: each follow-up may land on either; all of them find the state.
        r = c.responses.create(model="gem", input="one")
        for n in range(4):
            with c.responses.stream(model="gem", input=f"turn {n}", previous_response_id=r.id) as s:
                list(s)
                r = s.get_final_response()
        forgotten = c.responses.create(model="claude", input="x", store=False)
    finally:
        c.close()
    with server.client() as redis:
        keys = [k.decode() for k in redis.scan_iter("gw:*:resp:*")]
        assert any(k.endswith(f":resp:{rid}") for k in keys)
        assert any(k.endswith(f":resp:{r.id}") for k in keys)
        assert not any(k.endswith(f":resp:{forgotten.id}") for k in keys)
        for k in keys:
            assert k.startswith("gw:{") and "}:resp:" in k
            assert "tenant-a-key" not in k and "tenant-b-key" not in k
            ttl = redis.pttl(k)
            assert 0 < ttl <= 30 * 86_400 * 1000
            assert b"tenant-a-key" not in redis.get(k)
        # the record of the last turn holds the whole conversation
        record = json.loads(redis.get(next(k for k in keys if k.endswith(r.id))))
    assert [i.get("role") for i in record["input"] if i.get("type") != "function_call"].count(
        "user"
    ) == 5


def test_the_access_line_and_metrics_count_responses(
    client: openai.OpenAI, resp_gateway: GatewayProc
) -> None:
    raw = client.responses.with_raw_response.create(
        model="claude", input="count me", extra_headers={"x-request-id": "resp-access-1"}
    )
    assert raw.headers["x-request-id"] == "resp-access-1"
    line = resp_gateway.wait_for_access("resp-access-1")
    assert line["route"] == "/v1/responses"
    assert line["status"] == 200
    assert line["provider"] == "anthropic"
    assert line["model"] == "claude"
    text = resp_gateway.metrics()
    assert metric_sum(text, "llm_tokens_total", provider="anthropic", model="claude") > 0
    assert metric_sum(text, "gateway_responses_state_total", op="save", result="ok") >= 1


def test_a_plugin_that_rewrites_the_input_is_what_every_upstream_sees(
    client: openai.OpenAI, fakes: dict[str, Recorded]
) -> None:
    for fake in fakes.values():
        fake.reset()
    first = client.responses.with_raw_response.create(
        model="claude", input="write to jane@example.com"
    )
    assert first.headers["x-gateway-redactions"] == "1"
    sent = fakes["anthropic"].posts("/v1/messages")[-1]["json"]
    assert "jane@example.com" not in json.dumps(sent)
    assert sent["messages"][0]["content"][0]["text"] == "write to [REDACTED:email]"
    # the stored history is the redacted one: another upstream gets it expanded as sent
    client.responses.create(
        model="gpt", input="and to bob@example.com", previous_response_id=first.parse().id
    )
    sent = fakes["responses"].posts("/v1/responses")[-1]["json"]
    assert "@example.com" not in json.dumps(sent)
    assert sent["input"][0]["content"] == "write to [REDACTED:email]"
