"""Gemini generateContent answers, streams and errors -> OpenAI, for the ``gemini`` adapter.

PROVIDERS.md sections 3 and 4: each candidate is a choice; a ``functionCall``
part becomes one tool call with a generated id (the Developer API sends none)
and complete JSON arguments, arriving whole in streams; a ``thoughtSignature``
rides inside that id (after ``SIGNATURE_SEP``) so it goes back to Gemini on the
next turn; thought parts are not surfaced; ``STOP`` with function calls is
``tool_calls``. Thinking tokens count as completion tokens. Errors are
google.rpc.Status bodies, mapped by ``map_status``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import GatewayError, UpstreamStatus
from gateway.translate.common import (
    DONE_FRAME,
    ChunkWriter,
    IdFactory,
    assistant_message,
    chat_completion,
    choice,
    encode,
    new_id,
    scrub,
    seconds_header,
    tool_call,
)
from gateway.translate.upstream import (
    SSEStream,
    auth_failed,
    decode_body,
    decode_event,
    ended_early,
    rate_limited,
    request_rejected,
    upstream_failed,
)
from gateway.wire.chat import Usage

PROVIDER = "gemini"
SIGNATURE_SEP = "__thought__"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "LANGUAGE": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "IMAGE_OTHER": "content_filter",
    # policy: no OpenAI equivalent; "stop" (MALFORMED_FUNCTION_CALL, OTHER, ...)
}

# -- wire views -------------------------------------------------------------------------


class _FunctionCall(msgspec.Struct, kw_only=True):
    name: str = ""
    args: dict[str, Any] | None = None
    id: str | None = None


class _Part(msgspec.Struct, kw_only=True, rename="camel"):
    text: str | None = None
    thought: bool | None = None
    thought_signature: str | None = None
    function_call: _FunctionCall | None = None


class _Content(msgspec.Struct, kw_only=True):
    parts: list[_Part] = []
    role: str | None = None


class _Candidate(msgspec.Struct, kw_only=True, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int | None = None  # proto3 omits 0


class UsageMetadata(msgspec.Struct, kw_only=True, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int = 0
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


class _PromptFeedback(msgspec.Struct, kw_only=True, rename="camel"):
    block_reason: str | None = None


class _Status(msgspec.Struct, kw_only=True):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[Any] = []


class _Response(msgspec.Struct, kw_only=True, rename="camel"):
    candidates: list[_Candidate] | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    prompt_feedback: _PromptFeedback | None = None
    error: _Status | None = None


class _ErrorBody(msgspec.Struct, kw_only=True):
    error: _Status | None = None


_response_decoder = msgspec.json.Decoder(_Response)
_error_decoder = msgspec.json.Decoder(_ErrorBody | list[_ErrorBody])


# -- answers ----------------------------------------------------------------------------


def usage_from(u: UsageMetadata | None) -> Usage:
    """Gemini usageMetadata as OpenAI usage (policy: thinking counts as completion)."""
    if u is None:
        return Usage()
    prompt = u.prompt_token_count + u.tool_use_prompt_token_count
    completion = u.candidates_token_count + u.thoughts_token_count
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": u.cached_content_token_count},
        completion_tokens_details={"reasoning_tokens": u.thoughts_token_count},
    )


def finish_reason(reason: str | None, has_calls: bool) -> str:
    if reason == "STOP" and has_calls:
        return "tool_calls"
    return FINISH_REASONS.get(reason or "", "stop")


def _call_id(fc: _FunctionCall, signature: str | None, make_id: IdFactory) -> str:
    base = fc.id or make_id("call_")
    return base + SIGNATURE_SEP + signature if signature else base


def _decode_response(content: bytes) -> _Response:
    return decode_body(
        _response_decoder,
        content,
        PROVIDER,
        "returned a body that is not a valid generateContent response",
    )


def gemini_to_chat(
    content: bytes,
    model: str,
    make_id: IdFactory = new_id,
    created: int | None = None,
) -> tuple[bytes, Usage]:
    """A Gemini generateContent response as an OpenAI chat completion (JSON bytes)."""
    r = _decode_response(content)
    if r.error is not None:
        raise stream_error(r.error)
    choices = []
    for pos, cand in enumerate(r.candidates or ()):
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in cand.content.parts if cand.content else ():
            if part.function_call is not None:
                fc = part.function_call
                call_id = _call_id(fc, part.thought_signature, make_id)
                calls.append(tool_call(call_id, fc.name, encode(fc.args or {}).decode()))
            elif part.text and not part.thought:
                texts.append(part.text)
        choices.append(
            choice(
                cand.index if cand.index is not None else pos,
                assistant_message(texts, calls),
                finish_reason(cand.finish_reason, bool(calls)),
            )
        )
    if not choices:
        # No candidates: the prompt was blocked (promptFeedback.blockReason) or nothing came.
        blocked = r.prompt_feedback is not None and r.prompt_feedback.block_reason
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
                "finish_reason": "content_filter" if blocked else "stop",
            }
        )
    usage = usage_from(r.usage_metadata)
    cid = r.response_id or make_id("chatcmpl-")
    return chat_completion(cid, r.model_version or model, choices, usage, created), usage


# -- errors -----------------------------------------------------------------------------


def _retry_delay(details: list[Any]) -> str | None:
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = d.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return seconds_header(float(delay[:-1]))
                except ValueError:
                    return None
    return None


def _key_rejected(details: list[Any]) -> bool:
    return any(
        isinstance(d, dict) and d.get("reason") in ("API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED")
        for d in details
    )


def map_status(
    status: int, err: _Status | None, headers: dict[str, str], key: str | None = None
) -> GatewayError:
    """A google.rpc.Status (and its HTTP status) as the client should see it."""
    message = scrub((err.message if err else "")[:1000], key) or f"status {status}"
    gstatus = err.status if err and err.status else None
    details = err.details if err else []
    keep = dict(headers)
    retry = _retry_delay(details)
    if retry is not None and "retry-after" not in keep:
        keep["retry-after"] = retry
    if status in (401, 403) or _key_rejected(details):
        return auth_failed(PROVIDER, status)
    if status == 429:
        return rate_limited(PROVIDER, message, keep)
    if 400 <= status < 500:
        return request_rejected(PROVIDER, status, message, "invalid_request_error", gstatus)
    if status == 503:
        return UpstreamStatus(
            f"provider {PROVIDER} is unavailable: {message}",
            provider=PROVIDER,
            upstream_status=503,
            status=503,
            type="service_unavailable",
            code=gstatus,
            headers=keep,
        )
    return upstream_failed(PROVIDER, status, message, keep, code=gstatus)


def decode_error(content: bytes) -> _Status | None:
    try:
        body = _error_decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    first: _ErrorBody = (body[0] if body else _ErrorBody()) if isinstance(body, list) else body
    return first.error


def stream_error(err: _Status) -> GatewayError:
    return map_status(err.code or 500, err, {})


# -- streams ----------------------------------------------------------------------------


class GeminiStream(SSEStream):
    """Gemini ``streamGenerateContent?alt=sse`` in, OpenAI chunk frames out.

    Each event is a whole GenerateContentResponse: text parts are deltas, a
    ``functionCall`` part is one complete tool call, ``finishReason`` ends its
    choice. There is no terminator: the body's end is the end, so ``finish()``
    accepts it only after every choice has finished (else the stream was cut).
    """

    __slots__ = (
        "_calls",
        "_created",
        "_finished",
        "_head",
        "_include_usage",
        "_make_id",
        "_model",
        "_out",
        "_seen",
    )

    def __init__(
        self,
        model: str,
        include_usage: bool,
        make_id: IdFactory = new_id,
        created: int | None = None,
    ) -> None:
        super().__init__(PROVIDER)
        self._model = model
        self._include_usage = include_usage
        self._make_id = make_id
        self._created = created
        self._out: ChunkWriter | None = None
        self._seen: set[int] = set()  # choices whose role chunk went out
        self._calls: dict[int, int] = {}  # choice -> tool calls so far
        self._finished: set[int] = set()
        self._head = bytearray()  # the first bytes, to read a JSON error body sent as-is

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._out is None and len(self._head) < 65536:
            self._head += chunk[: 65536 - len(self._head)]
        return super().feed(chunk)

    def _event(self, _etype: str, data: str, frames: list[bytes]) -> None:
        r = decode_event(_response_decoder, data, PROVIDER)
        if r.error is not None:
            raise stream_error(r.error)
        out = self._out
        if out is None:
            out = self._out = ChunkWriter(
                r.response_id or self._make_id("chatcmpl-"),
                r.model_version or self._model,
                self._created,
            )
        for pos, cand in enumerate(r.candidates or ()):
            i = cand.index if cand.index is not None else pos
            if i in self._finished:
                continue
            if i not in self._seen:
                self._seen.add(i)
                frames.append(out.role(i))
            for part in cand.content.parts if cand.content else ():
                if part.function_call is not None:
                    fc = part.function_call
                    k = self._calls.get(i, 0)
                    self._calls[i] = k + 1
                    call_id = _call_id(fc, part.thought_signature, self._make_id)
                    args = encode(fc.args or {}).decode()
                    frames.append(out.tool_start(i, k, call_id, fc.name, args))
                elif part.text and not part.thought:
                    frames.append(out.text(i, part.text))
            if cand.finish_reason:
                self._finished.add(i)
                reason = finish_reason(cand.finish_reason, bool(self._calls.get(i)))
                frames.append(out.finish(i, reason))
        if not r.candidates and r.prompt_feedback is not None and r.prompt_feedback.block_reason:
            if 0 not in self._seen:
                self._seen.add(0)
                frames.append(out.role(0))
            if 0 not in self._finished:
                self._finished.add(0)
                frames.append(out.finish(0, "content_filter"))
        if r.usage_metadata is not None:
            self.usage = usage_from(r.usage_metadata)

    def _end_of_body(self) -> list[bytes]:
        if self.done:
            return []
        if self._out is None:
            err = decode_error(bytes(self._head))
            if err is not None:
                raise map_status(err.code or 500, err, {})
        if self._out is None or not self._finished or self._seen - self._finished:
            raise ended_early(PROVIDER, "its finishReason")
        frames: list[bytes] = []
        if self._include_usage and self.usage is not None:
            frames.append(self._out.usage(self.usage))
        frames.append(DONE_FRAME)
        self.done = True
        return frames


__all__ = [
    "FINISH_REASONS",
    "PROVIDER",
    "SIGNATURE_SEP",
    "GeminiStream",
    "UsageMetadata",
    "decode_error",
    "finish_reason",
    "gemini_to_chat",
    "map_status",
    "usage_from",
]
