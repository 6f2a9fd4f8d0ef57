"""``/v1/responses`` pieces offline: replay and assembly, the failure ending, which
deployments pass through, the conversation store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.errors import UpstreamStatus
from gateway.pipeline.conversation import Conversation, Conversations, origin, passthrough_body
from gateway.pipeline.shapes import RESPONSES
from gateway.providers.registry import _responses_mode
from gateway.store.memory import MemoryBackend
from gateway.translate.responses_events import ResponsesAssembler, response_frames
from gateway.translate.responses_request import expand, portable
from tests.providers import golden as g
from tests.responses import golden as rg

RESPONSES_CASES = [p for p in rg.cases("response")] + [
    p for p in rg.cases("stream") if "expect" in rg.load(p)
]


def _final(path: Any) -> dict[str, Any]:
    case = rg.load(path)
    obj = dict(case["expect"]["response"] if "response" in case["expect"] else case["expect"])
    obj["created_at"] = 0
    return obj


@pytest.mark.parametrize("path", RESPONSES_CASES, ids=[p.stem for p in RESPONSES_CASES])
def test_a_stored_response_replays_as_the_stream_it_would_have_been(path: Any) -> None:
    body = json.dumps(_final(path)).encode()
    frames = response_frames(body)
    summary = rg.summarize([frames])
    assert summary["events"][0] == "response.created"
    assert summary["events"][-1] == f"response.{json.loads(body)['status']}"
    assert summary["response"] == {k: v for k, v in json.loads(body).items() if k != "created_at"}
    # and assembling the replay (split anywhere) gives the response back
    for pieces in g.splits(frames)[:: max(1, len(frames) // 40)]:
        asm = ResponsesAssembler()
        for piece in pieces:
            asm.feed(piece)
        assert asm.result() is not None and json.loads(asm.result() or b"") == json.loads(body)


def test_a_broken_stream_ends_with_error_and_response_failed_after_what_was_sent() -> None:
    case = rg.load(rg.CASES / "stream_anthropic_overloaded.json")
    translator = rg.translator(case)
    with pytest.raises(g.Raised) as info:
        g.run_stream(translator, [rg.transcript(case)])
    watch = ResponsesAssembler()
    watch.feed(b"".join(info.value.frames))
    sent = g.sse_events(b"".join(info.value.frames))
    ending = g.sse_events(watch.failure(info.value.err))
    assert [e for e, _ in ending] == ["error", "response.failed"]
    last = sent[-1][1]["sequence_number"]
    assert [d["sequence_number"] for _, d in ending] == [last + 1, last + 2]
    failed = ending[1][1]["response"]
    assert failed["id"] == sent[0][1]["response"]["id"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert ending[0][1]["message"] == info.value.err.message
    assert failed["output"] == []  # nothing was finished before it broke


def test_the_unbound_error_shape_is_a_whole_sequence_of_its_own() -> None:
    err = UpstreamStatus("slow down", provider="openai", upstream_status=429, status=429)
    events = g.sse_events(RESPONSES.event(err))
    assert [e for e, _ in events] == ["response.created", "error", "response.failed"]
    assert [d["sequence_number"] for _, d in events] == [0, 1, 2]
    assert events[2][1]["response"]["error"]["code"] == "rate_limit_exceeded"
    assert events[0][1]["response"]["id"] == events[2][1]["response"]["id"]


@pytest.mark.parametrize(
    ("provider", "extra", "mode"),
    [
        ("openai", {}, "passthrough"),
        ("openai", {"responses": "translate"}, "translate"),
        ("mock", {}, "translate"),
        ("anthropic", {}, "translate"),
        ("gemini", {}, "translate"),
        ("azure", {"api_version": "v1"}, "passthrough"),
        ("azure", {}, "translate"),  # the default dated api-version predates Responses
        ("azure", {"api_version": "2025-04-01-preview"}, "passthrough"),
        ("azure", {"responses": "passthrough"}, "passthrough"),
    ],
)
def test_which_deployments_pass_the_responses_api_through(
    provider: str, extra: dict[str, Any], mode: str
) -> None:
    from gateway.config import Deployment as Cfg

    base = {"azure": "https://r.openai.azure.com"}.get(provider, "https://x.example/v1")
    d = g.make_dep(provider, "m", base, extra.get("api_version"))
    cfg = Cfg(provider=provider, model="m", **extra)  # type: ignore[arg-type]
    assert _responses_mode(cfg, d) == mode


def test_azure_responses_urls() -> None:
    v1 = g.make_dep("azure", "dep1", "https://r.openai.azure.com", "v1")
    req = v1.adapter.native_responses.responses_request(v1, {"model": "x", "input": "y"}, False)  # type: ignore[union-attr]
    assert str(req.url) == "https://r.openai.azure.com/openai/v1/responses"
    assert json.loads(req.content)["model"] == "dep1"
    dated = g.make_dep("azure", "dep1", "https://r.openai.azure.com", "2025-04-01-preview")
    req = dated.adapter.native_responses.responses_request(dated, {"input": "y"}, True)  # type: ignore[union-attr]
    assert str(req.url) == (
        "https://r.openai.azure.com/openai/responses?api-version=2025-04-01-preview"
    )


def test_passthrough_only_on_openai_and_azure() -> None:
    bad = {"models": [{"alias": "a", "deployments": [{"provider": "anthropic", "model": "c"}]}]}
    bad["models"][0]["deployments"][0]["responses"] = "passthrough"
    with pytest.raises(ConfigError, match="responses"):
        parse_config(bad, check_env=False)
    ok = {"models": [{"alias": "a", "deployments": [{"provider": "openai", "model": "c"}]}]}
    ok["models"][0]["deployments"][0]["responses"] = "translate"
    assert parse_config(ok, check_env=False).models[0].deployments[0].responses == "translate"


def test_a_follow_up_keeps_its_id_only_where_it_was_made() -> None:
    made_here = g.make_dep("openai", "gpt-4o", "https://api.openai.com/v1")
    made_here.responses = "passthrough"
    other_key = g.make_dep("openai", "gpt-4o", "https://api.openai.com/v1", key="sk-other")
    other_key.responses = "passthrough"
    assert origin(made_here) != origin(other_key)
    assert "SECRET" not in origin(made_here)

    class Ctx:
        body = {"model": "m", "input": "next", "previous_response_id": "resp_1"}
        conversation = Conversation(
            [
                {"type": "reasoning", "id": "rs_1", "encrypted_content": "x"},
                {"type": "message", "id": "msg_1", "role": "assistant", "content": "hi"},
            ],
            origin(made_here),
        )

    ctx: Any = Ctx()
    assert passthrough_body(ctx, made_here) is ctx.body
    moved = passthrough_body(ctx, other_key)
    assert "previous_response_id" not in moved
    assert moved["input"] == [
        {"type": "message", "role": "assistant", "content": "hi"},
        {"type": "message", "role": "user", "content": "next"},
    ]
    assert portable(ctx.conversation.items(ctx.body)) == moved["input"]


def test_item_references_resolve_only_within_the_conversation() -> None:
    history = [{"type": "message", "id": "msg_1", "role": "assistant", "content": "a"}]
    assert expand(history, [{"type": "item_reference", "id": "msg_1"}]) == history + history
    with pytest.raises(Exception, match="msg_2"):
        expand(history, [{"type": "item_reference", "id": "msg_2"}])


@pytest.mark.anyio
async def test_memory_store_is_per_tenant_and_deletes() -> None:
    from gateway.config import ResponsesOptions

    conv = Conversations(ResponsesOptions(), 0.05)
    await conv.start(MemoryBackend())
    body = json.dumps({"id": "resp_x", "object": "response", "output": []}).encode()
    await conv.save("alice", [{"role": "user", "content": "hi"}], "gateway", body)
    assert await conv.response("alice", "resp_x") == body
    assert await conv.response("bob", "resp_x") is None
    assert not await conv.delete("bob", "resp_x")
    assert await conv.delete("alice", "resp_x")
    assert await conv.response("alice", "resp_x") is None
    assert Conversations.key("alice", "resp_x") == "gw:{alice}:resp:resp_x"
    # a tenant id that is not plain text never reaches a key as it is
    assert "a b" not in Conversations.key("a b", "resp_x")


@pytest.mark.anyio
async def test_an_unreachable_store_is_a_503_on_read_and_never_fails_an_answer() -> None:
    from redis.asyncio import Redis

    from gateway.config import ResponsesOptions
    from gateway.errors import ServiceUnavailable
    from gateway.store.responses import RedisResponseStore
    from tests.harness import closed_port

    client = Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=0.2)
    conv = Conversations(ResponsesOptions(), 0.5)
    conv.store = RedisResponseStore(client, timeout_s=0.5)
    try:
        body = json.dumps({"id": "resp_y", "object": "response", "output": []}).encode()
        await conv.save("alice", [], "gateway", body)  # counted, not raised
        with pytest.raises(ServiceUnavailable):
            await conv.recall("alice", "resp_y")
        with pytest.raises(ServiceUnavailable):
            await conv.delete("alice", "resp_y")
    finally:
        await client.aclose()


def test_the_redact_plugin_reads_responses_bodies() -> None:
    from gateway.api.responses import RESPONSES_ENDPOINT
    from gateway.pipeline.context import RequestContext
    from gateway.plugins.redact import Redact, RedactOptions

    secret, clean = "mail jane@example.com", "mail [REDACTED:email]"
    body: dict[str, Any] = {
        "model": "m",
        "instructions": secret,
        "input": [
            {"role": "developer", "content": secret},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": secret}],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": secret}],
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": secret},
            {"type": "input_image", "image_url": secret},  # not prompt text: left alone
        ],
    }
    ctx = RequestContext("r", 0.0, "POST", "/v1/responses")
    ctx.endpoint = RESPONSES_ENDPOINT
    ctx.body = body
    Redact(RedactOptions(builtin=("email",)))(ctx)
    items = body["input"]
    assert body["instructions"] == clean
    assert items[0]["content"] == clean
    assert items[1]["content"][0]["text"] == clean
    assert items[2]["content"][0]["text"] == clean
    assert items[4]["output"] == clean
    assert items[5]["image_url"] == secret
    assert ctx.headers["x-gateway-redactions"] == "5"
    ctx.body = {"model": "m", "input": secret}
    Redact(RedactOptions(builtin=("email",), fields=("user",)))(ctx)
    assert ctx.body["input"] == clean
