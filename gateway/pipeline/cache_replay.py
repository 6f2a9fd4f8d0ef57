"""Stage 3's stream assembly and replay, for the response cache (``cache.py``).

``StreamAssembler`` turns a streamed chat answer (the relay's OpenAI chunks) into
the equivalent ``chat.completion`` JSON: content, refusal, tool calls with their
whole arguments, a legacy ``function_call``, logprobs, finish reasons, usage. It
returns None unless the stream was a whole, clean answer (every choice has a finish
reason, nothing it could not parse), so only those are stored.

``completion_frames`` goes the other way: a stored ``chat.completion`` as the SSE
stream OpenAI would have sent for it (a role chunk, a content chunk, one chunk per
tool call, a finish chunk per choice, the usage chunk only if the client asked
for ``stream_options.include_usage``, then ``data: [DONE]``), so one stored
format serves streaming and non-streaming clients.

``KeptFrames`` keeps a relayed stream (any endpoint's) for the cache to store as it
was relayed, up to ``KEEP_BYTES`` (past that the endpoint's assembler reads it as it
comes); ``assembled`` turns such a stored stream (``Entry.frames``) into the answer
when it is first read, with the provider's usage stored beside the frames. Why: the
assembly costs a worker ~45 µs a short answer (measured in place), and a miss is
what a gateway mostly serves; a stored stream is ~5x its JSON until its first hit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from _speedups.sse import SSEDecoder
from gateway.pipeline.cache_entry import Entry, usage_ints
from gateway.sse_write import DONE, event
from gateway.wire.chat import Usage

if TYPE_CHECKING:
    from gateway.pipeline.endpoint import Assembler

__all__ = [
    "KEEP_BYTES",
    "KeptFrames",
    "StreamAssembler",
    "assembled",
    "assembles",
    "completion_frames",
    "stream_entry",
]

log = logging.getLogger("gateway.cache")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
_usage = msgspec.json.Decoder(Usage).decode


# The chunk nearly every streamed answer is made of, after its first: one content delta,
# nothing else in the choice. Decoded typed (no dicts for the parts not kept); a chunk
# of any other shape, with an ``error`` or a usage, fails this decode and takes the
# generic path, which gives the same result for this shape.
class _TextDelta(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    content: str


class _TextChoice(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    index: int
    delta: _TextDelta
    logprobs: None = None
    finish_reason: None = None


class _TextChunk(msgspec.Struct, gc=False):
    choices: list[_TextChoice]
    system_fingerprint: str | None = None
    usage: None = None
    error: msgspec.UnsetType = msgspec.UNSET


_text_chunk = msgspec.json.Decoder(_TextChunk).decode


class _Choice:
    __slots__ = (
        "content",
        "finish",
        "function_call",
        "lp_content",
        "lp_refusal",
        "refusal",
        "tools",
    )

    def __init__(self) -> None:
        self.content: str | None = None
        self.refusal: str | None = None
        self.tools: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.lp_content: list[Any] | None = None
        self.lp_refusal: list[Any] | None = None
        self.finish: str | None = None


def _concat(acc: str | None, piece: Any) -> str | None:
    """Strings accumulate as the openai SDK does: concatenated."""
    if isinstance(piece, str):
        return piece if acc is None else acc + piece
    return acc


# Frames kept as they come, and parsed once at the end, up to this many bytes; a longer
# stream is parsed from then on as it goes, so memory stays bounded.
LAZY_BYTES = 256 * 1024


class StreamAssembler:
    """OpenAI chat chunks (the relay's frames) in, the equivalent ``chat.completion`` out.

    ``feed`` only keeps the frames (up to ``LAZY_BYTES``); ``result`` parses them in one
    pass, after the stream has ended: one SSE parse for the whole answer instead of one
    per relayed chunk (~25 µs for a 24-event answer against ~41), none of it while the
    client waits for the next event, and none at all for a stream that fails.
    """

    typed = True  # the typed path for plain text chunks (tests compare it with the generic)

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._base: dict[str, Any] | None = None
        self._choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.ok = True  # False once the stream is known not to assemble
        self._kept: list[bytes] | None = []
        self._size = 0

    def feed(self, frame: bytes) -> None:
        if not self.ok:
            return
        kept = self._kept
        if kept is not None:
            kept.append(frame)
            self._size += len(frame)
            if self._size <= LAZY_BYTES:
                return
            self._kept = None  # a long answer: parsed as it goes from here on
            frame = b"".join(kept)
        self._parse(frame)

    def _parse(self, frame: bytes) -> None:
        for _etype, data, _id in self._sse.feed(frame):
            if data == "[DONE]":
                continue
            if self._base is not None and self.typed:  # the first sets the base: generic
                try:
                    text = _text_chunk(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    pass
                else:
                    self._text(text)
                    continue
            try:
                obj = _decode(data)
                self._chunk(obj)
            except (msgspec.DecodeError, TypeError, AttributeError, ValueError):
                self.ok = False  # not a stream this code understands: do not store it
                return

    def _text(self, chunk: _TextChunk) -> None:
        """``_chunk`` for a ``_TextChunk``: the same changes, without the dicts."""
        assert self._base is not None
        if chunk.system_fingerprint is not None:
            self._base["system_fingerprint"] = chunk.system_fingerprint
        for c in chunk.choices:
            ch = self._choices.get(c.index)
            if ch is None:
                ch = self._choices[c.index] = _Choice()
            content = c.delta.content
            ch.content = content if ch.content is None else ch.content + content

    def _chunk(self, obj: Any) -> None:
        if not isinstance(obj, dict) or "error" in obj:
            raise ValueError("not a chat chunk")
        if self._base is None:
            self._base = {
                k: obj[k]
                for k in ("id", "created", "model", "service_tier", "system_fingerprint")
                if k in obj
            }
        elif obj.get("system_fingerprint") is not None:
            self._base["system_fingerprint"] = obj["system_fingerprint"]
        if obj.get("usage"):
            self.usage = obj["usage"]
        for c in obj.get("choices") or ():
            index = c.get("index", 0)
            if type(index) is not int:  # "0" beside 0 could not even be sorted in result()
                raise ValueError("a choice index that is not an integer")
            ch = self._choices.get(index)
            if ch is None:
                ch = self._choices[index] = _Choice()
            delta = c.get("delta") or {}
            ch.content = _concat(ch.content, delta.get("content"))
            ch.refusal = _concat(ch.refusal, delta.get("refusal"))
            for tc in delta.get("tool_calls") or ():
                t = ch.tools.get(tc.get("index", 0))
                if t is None:
                    t = ch.tools[tc.get("index", 0)] = {"id": None, "type": "function"}
                    t["function"] = {"name": None, "arguments": None}
                t["id"] = _concat(t["id"], tc.get("id"))
                if isinstance(tc.get("type"), str):
                    t["type"] = tc["type"]
                fn = tc.get("function") or {}
                t["function"]["name"] = _concat(t["function"]["name"], fn.get("name"))
                t["function"]["arguments"] = _concat(
                    t["function"]["arguments"], fn.get("arguments")
                )
            fc = delta.get("function_call")
            if fc:
                acc = ch.function_call or {}
                for k in ("name", "arguments"):
                    acc[k] = _concat(acc.get(k), fc.get(k)) or ""
                ch.function_call = acc
            lp = c.get("logprobs")
            if isinstance(lp, dict):
                if isinstance(lp.get("content"), list):
                    ch.lp_content = (ch.lp_content or []) + lp["content"]
                if isinstance(lp.get("refusal"), list):
                    ch.lp_refusal = (ch.lp_refusal or []) + lp["refusal"]
            if c.get("finish_reason") is not None:
                ch.finish = c["finish_reason"]

    def result(self, usage: Usage | None = None) -> bytes | None:
        """The completion JSON, or None if the stream was not a whole, clean answer."""
        kept, self._kept = self._kept, None
        if kept and self.ok:
            self._parse(b"".join(kept))
        if not self.ok or self._base is None or not self._choices:
            return None
        choices = []
        for index in sorted(self._choices):
            ch = self._choices[index]
            if ch.finish is None:
                return None
            tools = [ch.tools[k] for k in sorted(ch.tools)]
            for t in tools:
                t["function"]["name"] = t["function"]["name"] or ""
                t["function"]["arguments"] = t["function"]["arguments"] or ""
            content = ch.content
            if content == "" and (tools or ch.function_call or ch.refusal):
                content = None
            message: dict[str, Any] = {"role": "assistant", "content": content}
            message["refusal"] = ch.refusal or None
            if tools:
                message["tool_calls"] = tools
            if ch.function_call:
                message["function_call"] = ch.function_call
            logprobs = None
            if ch.lp_content is not None or ch.lp_refusal is not None:
                logprobs = {"content": ch.lp_content, "refusal": ch.lp_refusal}
            choice = {"index": index, "message": message, "logprobs": logprobs}
            choice["finish_reason"] = ch.finish
            choices.append(choice)
        base = self._base
        out: dict[str, Any] = {
            "id": base.get("id"),
            "object": "chat.completion",
            "created": base.get("created"),
            "model": base.get("model"),
            "choices": choices,
        }
        used = self.usage
        if used is None and usage is not None:
            used = {k: v for k, v in msgspec.to_builtins(usage).items() if v is not None}
        if used is not None:
            out["usage"] = used
        for k in ("service_tier", "system_fingerprint"):
            if base.get(k) is not None:
                out[k] = base[k]
        return _encode(out)


def _frame(obj: Any) -> bytes:
    return event(_encode(obj))


def completion_frames(body: bytes, include_usage: bool) -> bytes:
    """A stored ``chat.completion`` as the SSE stream OpenAI would have sent for it."""
    obj = _decode(body)
    base: dict[str, Any] = {
        "id": obj.get("id"),
        "object": "chat.completion.chunk",
        "created": obj.get("created"),
        "model": obj.get("model"),
    }
    for k in ("service_tier", "system_fingerprint"):
        if obj.get(k) is not None:
            base[k] = obj[k]
    out: list[bytes] = []

    def chunk(index: int, delta: dict[str, Any], **extra: Any) -> None:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        choice.update(extra)
        out.append(_frame({**base, "choices": [choice]}))

    for choice in obj.get("choices") or ():
        index = choice.get("index", 0)
        msg = choice.get("message") or {}
        content = msg.get("content")
        tools = msg.get("tool_calls") or []
        logprobs = choice.get("logprobs")
        first = "" if tools or isinstance(content, str) else None
        chunk(index, {"role": msg.get("role") or "assistant", "content": first})
        if isinstance(content, str) and content:
            chunk(index, {"content": content}, logprobs=logprobs)
            logprobs = None
        if isinstance(msg.get("refusal"), str) and msg["refusal"]:
            chunk(index, {"refusal": msg["refusal"]}, logprobs=logprobs)
            logprobs = None
        for n, tc in enumerate(tools):
            call = {
                "index": n,
                "id": tc.get("id"),
                "type": tc.get("type") or "function",
                "function": tc.get("function") or {"name": "", "arguments": ""},
            }
            chunk(index, {"tool_calls": [call]})
        if msg.get("function_call"):
            chunk(index, {"function_call": msg["function_call"]})
        chunk(index, {}, logprobs=logprobs, finish_reason=choice.get("finish_reason") or "stop")
    if include_usage and obj.get("usage") is not None:
        out.append(_frame({**base, "choices": [], "usage": obj["usage"]}))
    out.append(DONE)
    return b"".join(out)


# -- a stream stored as relayed ----------------------------------------------------------


# A stream up to this many bytes is stored as it was relayed and assembled only when it
# is first read; a longer one is assembled as it goes (bounded memory) and stored whole.
KEEP_BYTES = 256 * 1024


class KeptFrames:
    """A relayed stream's frames, kept as they come up to ``KEEP_BYTES``; past that they
    go to the endpoint's assembler, which reads the rest as it comes.

    Storing the frames and assembling them on the first read takes the assembly (an SSE
    parse and a JSON decode per event, ~45 µs of a worker for a 24-event answer) off
    every streamed miss; only an answer that is read again pays it (``assembled``).
    """

    __slots__ = ("_make", "assembler", "kept", "size")

    def __init__(self, make: Callable[[], Assembler]) -> None:
        self._make = make
        self.kept: list[bytes] = []
        self.size = 0
        self.assembler: Assembler | None = None

    def feed(self, frame: bytes) -> None:
        assembler = self.assembler
        if assembler is not None:
            assembler.feed(frame)
            return
        self.kept.append(frame)
        self.size += len(frame)
        if self.size > KEEP_BYTES:
            assembler = self.assembler = self._make()
            assembler.feed(b"".join(self.kept))
            self.kept = []


def stream_entry(provider: str, frames: bytes, usage: Usage | None) -> Entry:
    """A relayed stream's entry: its frames, and the provider's usage that ``assembled``
    hands its assembler (the frames carry it only if the client asked for it)."""
    prompt, completion = usage_ints(usage)
    raw = _encode(usage) if usage is not None else b""
    return Entry(provider, frames, prompt, completion, frames=True, usage=raw)


def assembles(entry: Entry, make: Callable[[], Assembler]) -> bool:
    """``assembled``, where a stored entry must never fail the request: a bug the
    frames bring out is logged and the request goes on as a miss."""
    try:
        return assembled(entry, make)
    except Exception as exc:
        log.error("cache entry did not assemble", exc_info=exc)
        return False


def assembled(entry: Entry, make: Callable[[], Assembler]) -> bool:
    """Make a stream entry (``frames``) the answer it stands for, in place, once for
    everyone holding it; False if its frames do not assemble (it is then not a hit)."""
    if not entry.frames:
        return True
    assembler = make()
    assembler.feed(entry.body)
    try:
        usage = _usage(entry.usage) if entry.usage else None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    body = assembler.result(usage)
    if body is None:
        return False
    entry.body, entry.frames, entry.usage = body, False, b""
    return True
