"""Pure parts of stage 3: stream assembly, SSE replay, entries, directives, tenants, and
the single-flight table driven directly (explicit tenants, lost leaders)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from gateway.api.chat import CHAT
from gateway.config import ConfigError
from gateway.errors import InvalidRequest
from gateway.pipeline.auth import Principal
from gateway.pipeline.cache import (
    ANONYMOUS,
    Entry,
    ResponseCache,
    directives,
)
from gateway.pipeline.cache_entry import tag as _tag
from gateway.pipeline.cache_replay import StreamAssembler, assembled, completion_frames
from gateway.pipeline.context import RequestContext
from gateway.settings import Settings
from gateway.wire.chat import Usage
from tests.cache.helpers import sse_chunks

BASE = {"id": "chatcmpl-1", "created": 1700000000, "model": "gpt-x", "system_fingerprint": "fp"}
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def completion(*choices: dict[str, Any], usage: dict[str, Any] | None = USAGE) -> dict[str, Any]:
    out: dict[str, Any] = {**BASE, "object": "chat.completion", "choices": list(choices)}
    if usage is not None:
        out["usage"] = usage
    return out


def choice(index: int = 0, finish: str = "stop", logprobs: Any = None, **message: Any) -> Any:
    msg = {"role": "assistant", "content": None, "refusal": None, **message}
    return {"index": index, "message": msg, "logprobs": logprobs, "finish_reason": finish}


TOOL_CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": [1, 2]}'},
    },
    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
]
LOGPROBS = {
    "content": [
        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []},
        {"token": "!", "logprob": -0.2, "bytes": [33], "top_logprobs": []},
    ],
    "refusal": None,
}
CASES = {
    "text": completion(choice(content="Hello, wörld ✓\nsecond line")),
    "empty": completion(choice(content="")),
    "tools": completion(choice(finish="tool_calls", tool_calls=TOOL_CALLS)),
    "text+tools": completion(
        choice(finish="tool_calls", content="Let me look.", tool_calls=TOOL_CALLS)
    ),
    "refusal": completion(choice(refusal="I can't help with that.")),
    "logprobs": completion(choice(content="Hi!", logprobs=LOGPROBS)),
    "n=2": completion(choice(0, content="one"), choice(1, content="two")),
    "length": completion(choice(finish="length", content="cut sh")),
    "no usage": completion(choice(content="x"), usage=None),
}


def roundtrip(obj: dict[str, Any], include_usage: bool = True) -> dict[str, Any]:
    frames = completion_frames(json.dumps(obj).encode(), include_usage)
    asm = StreamAssembler()
    for piece in frames.split(b"\n\n"):  # fed in arbitrary pieces, as a relay would
        asm.feed(piece + b"\n\n")
    out = asm.result()
    assert out is not None
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", list(CASES))
def test_replay_then_assembly_gives_back_the_completion(case: str) -> None:
    assert roundtrip(CASES[case]) == CASES[case]


# (the SDK's accumulator refuses finish_reason "length" by design)
@pytest.mark.parametrize("case", [c for c in CASES if c != "length"])
@pytest.mark.parametrize("include_usage", [False, True])
def test_replay_is_a_stream_the_openai_sdk_accepts(case: str, include_usage: bool) -> None:
    original = CASES[case]
    text = completion_frames(json.dumps(original).encode(), include_usage).decode()
    chunks = sse_chunks(text)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for c in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    final = state.get_final_completion()
    assert final.id == original["id"] and final.model == original["model"]
    for got, want in zip(final.choices, original["choices"], strict=True):
        msg = want["message"]
        assert got.finish_reason == want["finish_reason"]
        assert (got.message.content or None) == (msg["content"] or None)
        assert got.message.refusal == msg["refusal"]
        calls = [
            {
                "id": t.id,
                "type": t.type,
                "function": {"name": t.function.name, "arguments": t.function.arguments},
            }
            for t in got.message.tool_calls or []
        ]
        assert calls == (msg.get("tool_calls") or [])
    has_usage = any(c.get("usage") for c in chunks)
    assert has_usage == (include_usage and "usage" in original)


def test_assembly_of_an_upstream_style_stream() -> None:
    """Deltas as OpenAI sends them: arguments split anywhere, usage-only last chunk."""
    base = {**BASE, "object": "chat.completion.chunk"}

    def ev(choices: list[Any], **kw: Any) -> bytes:
        return b"data: " + json.dumps({**base, "choices": choices, **kw}).encode() + b"\n\n"

    args = '{"city": "Paris", "days": [1, 2]}'
    frames = [
        ev([{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]),
        ev(
            [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    },
                }
            ]
        ),
        *[
            ev(
                [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 5]}}]
                        },
                    }
                ]
            )
            for i in range(0, len(args), 5)
        ],
        ev([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        ev([], usage=USAGE),
        b"data: [DONE]\n\n",
    ]
    asm = StreamAssembler()
    blob = b"".join(frames)
    for i in range(0, len(blob), 7):
        asm.feed(blob[i : i + 7])
    got = json.loads(asm.result() or b"null")
    assert got == completion(choice(finish="tool_calls", tool_calls=TOOL_CALLS[:1]))


def test_assembly_usage_falls_back_to_the_relays() -> None:
    text = completion_frames(json.dumps(CASES["text"]).encode(), include_usage=False)
    asm = StreamAssembler()
    asm.feed(text)
    got = json.loads(asm.result(Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)) or b"")
    assert got["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    "frames",
    [
        [
            b'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
        ],  # no finish
        [b'data: {"error": {"message": "boom"}}\n\n'],
        [b"data: not json\n\n"],
        [  # a choice index that is not an integer ("0" beside 0 cannot even be sorted)
            b'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n',
            b'data: {"id": "x", "choices": [{"index": "0", "delta": {"content": "b"},'
            b' "finish_reason": "stop"}]}\n\n',
        ],
        [b"data: [DONE]\n\n"],
        [],
    ],
)
def test_incomplete_or_broken_streams_are_not_assembled(frames: list[bytes]) -> None:
    asm = StreamAssembler()
    for f in frames:
        asm.feed(f)
    assert asm.result() is None


def test_entry_roundtrip_and_garbage() -> None:
    e = Entry("openai", b'{"a": "\\n"}\n\x00tail', 12, 34)
    d = Entry.decode(e.encode())
    assert d is not None
    assert (d.provider, d.body, d.prompt_tokens, d.completion_tokens) == (
        "openai",
        e.body,
        12,
        34,
    )
    for junk in (b"", b"{}", b"gwc1 openai x y\n{}", b"gwc1 openai 1\n{}", b"gwc1 no-newline"):
        assert Entry.decode(junk) is None
    s = Entry("openai", b"data: {}\n\n", 1, 2, frames=True, usage=b'{"prompt_tokens":1}')
    d = Entry.decode(s.encode())
    assert d is not None and d.frames and not e.frames
    assert (d.body, d.usage, d.prompt_tokens, d.completion_tokens) == (s.body, s.usage, 1, 2)
    empty = Entry.decode(Entry("p", b"", frames=True).encode())
    assert empty is not None and (empty.body, empty.usage) == (b"", b"")
    for junk in (b"gws1 p 1 2\nx", b"gws1 p 1 2 9\nshort", b"gws1 p 1 2 x\n", b"gws1 p 1 2 -1\n"):
        assert Entry.decode(junk) is None


DETAILED = {**USAGE, "prompt_tokens_details": {"cached_tokens": 3}}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("in_stream", [False, True])
def test_a_stream_entry_assembles_as_the_relay_would_have(name: str, in_stream: bool) -> None:
    """A stream stored as relayed (``frames``) and assembled when read gives the bytes the
    assembler gives at the relay's end, with the provider's usage (details and all) when
    the frames carry no usage chunk (the client did not ask for one)."""
    frames = completion_frames(json.dumps(CASES[name]).encode(), include_usage=in_stream)
    usage = msgspec.convert(DETAILED, Usage)
    eager = StreamAssembler()
    eager.feed(frames)
    want = eager.result(usage)
    assert want is not None
    entry = Entry("openai", frames, 11, 7, frames=True, usage=msgspec.json.encode(usage))
    entry = Entry.decode(entry.encode())
    assert entry is not None and assembled(entry, StreamAssembler)
    assert (entry.body, entry.frames, entry.usage) == (want, False, b"")
    assert assembled(entry, StreamAssembler)  # once assembled, it stays as it is
    assert entry.body == want


def test_a_stream_entry_that_does_not_assemble_is_no_answer() -> None:
    unfinished = b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    for frames, usage in ((unfinished, b""), (b"data: [DONE]\n\n", b""), (b"", b"[1]")):
        entry = Entry("openai", frames, frames=True, usage=usage)
        assert not assembled(entry, StreamAssembler)
        assert entry.frames and entry.body == frames


def test_an_assembler_that_raises_makes_a_miss_not_a_500(caplog: pytest.LogCaptureFixture) -> None:
    from gateway.pipeline.cache_replay import assembles

    class Broken(StreamAssembler):
        def result(self, usage: Usage | None = None) -> bytes | None:
            raise KeyError("a bug the frames bring out")

    entry = Entry("openai", b"data: [DONE]\n\n", frames=True)
    assert not assembles(entry, Broken)
    assert entry.frames
    assert "did not assemble" in caplog.text


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ([], (None, False, False)),
        ([(b"cache-control", b"no-cache")], (None, True, False)),
        ([(b"cache-control", b"No-Store")], (None, False, True)),
        ([(b"cache-control", b"max-age=0, no-store , no-cache")], (None, True, True)),
        ([(b"cache-control", b"no-cache=foo")], (None, True, False)),
        ([(b"cache-control", b"private")], (None, False, False)),
        ([(b"x-gateway-cache-ttl", b"120")], (120, False, False)),
        ([(b"x-gateway-cache-ttl", b"86400")], (86400, False, False)),
    ],
)
def test_directives(headers: list[tuple[bytes, bytes]], want: Any) -> None:
    assert directives(headers) == want


@pytest.mark.parametrize("bad", [b"0", b"86401", b"-1", b"1.0", b"", b"abc", b"\xff", b"1 2"])
def test_bad_ttl(bad: bytes) -> None:
    with pytest.raises(InvalidRequest) as exc:
        directives([(b"x-gateway-cache-ttl", bad)])
    assert exc.value.param == "x-gateway-cache-ttl" and exc.value.status == 400


def test_tenant_tags_are_hash_tag_safe() -> None:
    assert _tag("acme-prod_1") == "acme-prod_1"
    for odd in ("{x}", "a}b", "a b", "ü", "x" * 65, ""):
        tag = _tag(odd)
        assert "{" not in tag and "}" not in tag and tag.startswith("h-")
    assert _tag("{x}") != _tag("{y}")


def test_settings() -> None:
    from gateway.config import parse_config

    cfg = parse_config({"limits": {"redis_timeout_ms": 20}})
    settings = msgspec.structs.replace(
        Settings.from_env({"GATEWAY_CACHE_LOCK_MS": "1000"}), config=cfg
    )
    cache = ResponseCache(settings)
    assert cache.timeout_s == 0.02 and cache.lock_ms == 1000
    with pytest.raises(ConfigError, match="GATEWAY_CACHE_LOCK_MS"):
        ResponseCache(Settings.from_env({"GATEWAY_CACHE_LOCK_MS": "soon"}))


# -- the cache driven directly -----------------------------------------------------------


GROUP = SimpleNamespace(name="cached", label="cached")


def request(tenant: str = ANONYMOUS) -> RequestContext:
    """What stage ``cache`` sees of a chat request after ``parse`` and ``auth``."""
    ctx = RequestContext("rid", 0.0, "POST", CHAT.path)
    ctx.scope = {"headers": []}  # type: ignore[typeddict-item]
    ctx.endpoint, ctx.body, ctx.group = CHAT, BODY, GROUP  # type: ignore[assignment]
    ctx.principal = Principal(tenant=tenant, name=tenant)
    return ctx


def make_cache(**env: str) -> ResponseCache:
    cfg = {
        "models": [
            {
                "alias": "cached",
                "cache": {"ttl": 60},
                "deployments": [{"provider": "mock", "model": "mock-1"}],
            }
        ]
    }
    from gateway.config import parse_config

    return ResponseCache(msgspec.structs.replace(Settings.from_env(env), config=parse_config(cfg)))


BODY = {"model": "cached", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_explicit_tenants_never_share(anyio_backend: str) -> None:
    cache = make_cache()
    a = await cache.lookup(request("a"))
    assert a.status == "MISS"
    a.store(b'{"x": 1}', "mock")
    b = await cache.lookup(request("b"))
    assert b.status == "MISS" and b.key != a.key
    assert a.key.startswith("gw:{a}:cache:") and b.key.startswith("gw:{b}:cache:")
    again = await cache.lookup(request("a"))
    assert again.status == "HIT" and again.entry is not None and again.entry.body == b'{"x": 1}'
    b.abandon()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_lost_leader_is_noticed_by_its_followers(anyio_backend: str) -> None:
    """A leader whose task ends without store() or abandon() (and is still referenced,
    so no finaliser runs) releases its followers within the watch period."""
    cache = make_cache(GATEWAY_CACHE_LOCK_MS="30000")
    kept: list[Any] = []

    async def leader() -> None:
        kept.append(await cache.lookup(request()))

    await asyncio.create_task(leader())
    assert kept[0].status == "MISS"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    follower = await asyncio.wait_for(cache.lookup(request()), 5)
    assert follower.status == "MISS" and follower.entry is None
    assert loop.time() - t0 < 1.0
    assert cache._flights == {}


@pytest.mark.parametrize("include_usage", [False, True])
def test_replay_of_line_breaks_in_content_is_valid_sse(include_usage: bool) -> None:
    """Content, refusal and tool arguments holding LF, CR and CRLF replay as events whose
    every line is a field and whose JSON gives the same strings back."""
    from tests.providers.golden import sse_events

    text = "one\ntwo\rthree\r\nfour\n\n"
    calls = [{"id": "c\r1", "type": "function", "function": {"name": "f", "arguments": text}}]
    original = completion(
        choice(0, content=text), choice(1, finish="tool_calls", refusal=text, tool_calls=calls)
    )
    frames = completion_frames(json.dumps(original).encode(), include_usage)
    events = sse_events(frames)
    assert events[-1] == ("message", "[DONE]")
    asm = StreamAssembler()
    asm.feed(frames)
    if not include_usage:
        del original["usage"]
    assert json.loads(asm.result() or b"null") == original


class _Generic(StreamAssembler):
    typed = False


_TEXT = st.text(max_size=6)
_ODD = st.one_of(st.none(), st.integers(-2, 2), st.booleans(), _TEXT, st.just([]), st.just({}))


@st.composite
def _chunk(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly the plain text chunk, in the variants a provider may send, and now and then
    something the typed path must hand over to the generic one."""
    choice: dict[str, Any] = {"index": draw(st.sampled_from([0, 0, 0, 1, True, "0"]))}
    choice["delta"] = draw(
        st.one_of(
            st.fixed_dictionaries({"content": _TEXT}),
            st.fixed_dictionaries({"content": _ODD}),
            st.fixed_dictionaries({"content": _TEXT, "refusal": _ODD}),
            st.fixed_dictionaries({"role": st.just("assistant"), "content": _TEXT}),
            _ODD,
        )
    )
    for key in ("logprobs", "finish_reason"):
        if draw(st.booleans()):
            choice[key] = draw(st.one_of(st.none(), st.none(), st.just("stop"), _ODD))
    out: dict[str, Any] = {**BASE, "object": "chat.completion.chunk", "choices": [choice]}
    extra = draw(st.sampled_from(["", "", "fp", "usage", "obfuscation", "error", "nochoices"]))
    if extra == "fp":
        out["system_fingerprint"] = draw(st.one_of(st.none(), _TEXT, st.integers()))
    elif extra == "usage":
        out["usage"] = draw(st.one_of(st.none(), st.just(USAGE)))
    elif extra == "obfuscation":
        out["obfuscation"] = "xyz"
    elif extra == "error":
        out["error"] = {"message": "boom"}
    elif extra == "nochoices":
        out["choices"] = draw(st.one_of(st.none(), st.just([])))
    return out


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(_chunk(), min_size=1, max_size=8), split=st.booleans())
def test_typed_text_chunks_assemble_as_the_generic_path_does(
    chunks: list[dict[str, Any]], split: bool
) -> None:
    """The typed path for plain text chunks changes nothing: any stream, the same result
    (or the same refusal to assemble) as the generic path alone."""
    first = {**BASE, "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}  # fmt: skip
    frames = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in [first, *chunks]]
    frames.append(b"data: [DONE]\n\n")
    typed, generic = StreamAssembler(), _Generic()
    for frame in frames if split else [b"".join(frames)]:
        typed.feed(frame)
        generic.feed(frame)
    assert typed.result() == generic.result()
    assert typed.ok == generic.ok


@pytest.mark.parametrize("piece", [7, 4096])
def test_a_long_stream_is_assembled_as_it_goes(piece: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``LAZY_BYTES`` the assembler stops keeping frames and parses as they come:
    the same result, whatever the split."""
    from gateway.pipeline import cache_replay

    text = completion_frames(json.dumps(CASES["text"]).encode(), include_usage=True)
    monkeypatch.setattr(cache_replay, "LAZY_BYTES", 40)
    asm = StreamAssembler()
    for i in range(0, len(text), piece):
        asm.feed(text[i : i + piece])
    assert asm._kept is None  # switched to parsing as it goes
    assert json.loads(asm.result() or b"null") == CASES["text"]
