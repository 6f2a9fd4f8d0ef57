"""OpenAI chat and embeddings <-> Gemini generateContent / embedContent, for the ``gemini`` adapter.

Requests (PROVIDERS.md section 2): system and developer messages become
``systemInstruction`` (one part each, in order); ``assistant`` is role ``model``;
tool results are ``functionResponse`` parts in a ``user`` turn, named from the
earlier tool call with the same id (Gemini requires the name); consecutive turns
with the same role are merged. Images as data URLs travel as ``inlineData``;
https image URLs as ``fileData`` (the gateway does no I/O, so it does not fetch
them; the MIME type is guessed from the extension). PDFs and audio travel as
``inlineData``. ``n`` is ``candidateCount``. Not honourable, so a 400: ``logprobs``,
``logit_bias``, audio output, web search. ``parallel_tool_calls: false`` has no
Gemini equivalent and is ignored.

Answers and streams (sections 3 and 4): each candidate is a choice; a
``functionCall`` part becomes one tool call with a generated id (the Developer
API sends none) and complete JSON arguments, arriving whole in streams; a
``thoughtSignature`` rides inside that id (after ``SIGNATURE_SEP``) so it goes
back to Gemini on the next turn; thought parts are not surfaced; ``STOP`` with
function calls is ``tool_calls``. Thinking tokens count as completion tokens.
"""

from __future__ import annotations

import base64
import contextvars
import struct
import time
from typing import Any

import msgspec

from gateway.errors import GatewayError, InvalidRequest, UpstreamStatus, UpstreamUnavailable
from gateway.translate.common import (
    DONE_FRAME,
    MAX_EVENT_BYTES,
    ChunkWriter,
    IdFactory,
    encode,
    file_data_of,
    image_url_of,
    new_id,
    parse_arguments,
    parse_data_url,
    scrub,
    seconds_header,
    text_of,
    unsupported,
    usage_dict,
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
_IMAGE_EXT = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
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


class _UsageMetadata(msgspec.Struct, kw_only=True, rename="camel"):
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
    usage_metadata: _UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    prompt_feedback: _PromptFeedback | None = None
    error: _Status | None = None


class _ErrorBody(msgspec.Struct, kw_only=True):
    error: _Status | None = None


class _Embedding(msgspec.Struct, kw_only=True):
    values: list[float] = []


class _EmbedResponse(msgspec.Struct, kw_only=True, rename="camel"):
    embedding: _Embedding | None = None
    embeddings: list[_Embedding] | None = None
    usage_metadata: _UsageMetadata | None = None


class _Model(msgspec.Struct, kw_only=True):
    name: str


class _ModelList(msgspec.Struct, kw_only=True):
    models: list[_Model] = []


_response_decoder = msgspec.json.Decoder(_Response)
_error_decoder = msgspec.json.Decoder(_ErrorBody | list[_ErrorBody])
_embed_decoder = msgspec.json.Decoder(_EmbedResponse)
_models_decoder = msgspec.json.Decoder(_ModelList)


# -- requests ---------------------------------------------------------------------------


def _check_unsupported(body: dict[str, Any]) -> None:
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported("logprobs", PROVIDER)
    if body.get("logit_bias"):
        raise unsupported("logit_bias", PROVIDER)
    if body.get("audio") or "audio" in (body.get("modalities") or ()):
        raise unsupported("modalities", PROVIDER, "audio output")
    if body.get("web_search_options") is not None:
        raise unsupported("web_search_options", PROVIDER)


def _image_mime(url: str) -> str:
    path = url.split("?", 1)[0].split("#", 1)[0]
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return _IMAGE_EXT.get(ext, "image/jpeg")


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type")
        if kind in ("text", "input_text"):
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            url = image_url_of(part, p)
            if url.startswith("data:"):
                mime, data = parse_data_url(url, f"{p}.image_url.url", PROVIDER)
                parts.append({"inlineData": {"mimeType": mime, "data": data}})
            elif url.startswith("https://") or url.startswith("http://"):
                parts.append({"fileData": {"mimeType": _image_mime(url), "fileUri": url}})
            else:
                raise InvalidRequest(
                    f"{p}.image_url.url: expected an https URL or a data URL",
                    param=f"{p}.image_url.url",
                )
        elif kind == "file":
            mime, data = file_data_of(part, p, PROVIDER)
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            fmt = audio.get("format")
            if fmt not in ("wav", "mp3") or not audio.get("data"):
                raise InvalidRequest(
                    f"{p}.input_audio: expected data and format wav or mp3",
                    param=f"{p}.input_audio",
                )
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": audio["data"]}})
        else:
            raise unsupported(f"{p}.type", PROVIDER, f"content part type {kind!r}")
    return parts


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """A tool call id as (id, thoughtSignature or None)."""
    head, sep, sig = call_id.partition(SIGNATURE_SEP)
    return (head, sig) if sep and sig else (call_id, None)


def _assistant_parts(m: dict[str, Any], param: str, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    content = m.get("content")
    if isinstance(content, list):
        text = "".join(
            str(p.get("text") or "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "output_text")
        )
    else:
        text = content or ""
    if text:
        parts.append({"text": text})
    for k, call in enumerate(m.get("tool_calls") or ()):
        fn = call.get("function") or {}
        name = fn.get("name") or ""
        call_id = str(call.get("id") or "")
        names[call_id] = name
        args = parse_arguments(fn.get("arguments"), f"{param}.tool_calls[{k}].function.arguments")
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        _, signature = split_call_id(call_id)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(m: dict[str, Any], param: str, names: dict[str, str]) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    name = names.get(call_id or "") or m.get("name")
    if not name:
        raise InvalidRequest(
            f"{param}.tool_call_id: no earlier assistant tool call has id "
            f"`{str(call_id)[:100]}`; {PROVIDER} needs the function's name",
            param=f"{param}.tool_call_id",
        )
    text = text_of(m.get("content"), f"{param}.content")
    try:
        value = msgspec.json.decode(text) if text.strip() else ""
    except msgspec.DecodeError:
        value = text
    response = value if isinstance(value, dict) else {"result": value}
    return {"functionResponse": {"name": name, "response": response}}


def _convert_messages(
    messages: list[dict[str, Any]],
) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name
    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        role = m.get("role")
        if role in ("system", "developer"):
            text = text_of(m.get("content"), f"{param}.content")
            if text:
                system.append(text)
            continue
        if role == "user":
            turn, parts = "user", _user_parts(m.get("content"), f"{param}.content")
        elif role == "assistant":
            turn, parts = "model", _assistant_parts(m, param, names)
        elif role == "tool":
            turn, parts = "user", [_function_response(m, param, names)]
        else:
            raise unsupported(f"{param}.role", PROVIDER, f"role {role!r}")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    decls = []
    for k, t in enumerate(tools):
        if t.get("type", "function") != "function" or not isinstance(t.get("function"), dict):
            raise unsupported(f"tools[{k}].type", PROVIDER, "only function tools")
        fn = t["function"]
        decl: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters"):
            decl["parametersJsonSchema"] = fn["parameters"]
        decls.append(decl)
    return [{"functionDeclarations": decls}]


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        cfg: dict[str, Any] = {"mode": "AUTO"}
    elif choice == "required":
        cfg = {"mode": "ANY"}
    elif choice == "none":
        cfg = {"mode": "NONE"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        cfg = {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    else:
        raise unsupported("tool_choice", PROVIDER, f"value {choice!r}")
    return {"functionCallingConfig": cfg}


def chat_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Gemini generateContent body (the model is in the URL)."""
    _check_unsupported(body)
    system, contents = _convert_messages(body.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": t} for t in system]}
    gc: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        gc["maxOutputTokens"] = max_tokens
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(src) is not None:
            gc[dst] = body[src]
    stop = body.get("stop")
    if stop:
        gc["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        gc["candidateCount"] = n
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            gc["responseMimeType"] = "application/json"
        elif fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise InvalidRequest(
                    "response_format.json_schema.schema: required",
                    param="response_format.json_schema.schema",
                )
            gc["responseMimeType"] = "application/json"
            gc["responseJsonSchema"] = schema
    if gc:
        out["generationConfig"] = gc
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
        cfg = _tool_config(body.get("tool_choice"))
        if cfg is not None:
            out["toolConfig"] = cfg
    return out


# -- answers ----------------------------------------------------------------------------


def usage_from(u: _UsageMetadata | None) -> Usage:
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
    try:
        return _response_decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamUnavailable(
            f"provider {PROVIDER} returned a body that is not a valid generateContent response",
            provider=PROVIDER,
        ) from None


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
                calls.append(
                    {
                        "id": _call_id(fc, part.thought_signature, make_id),
                        "type": "function",
                        "function": {
                            "name": fc.name,
                            "arguments": encode(fc.args or {}).decode(),
                        },
                    }
                )
            elif part.text and not part.thought:
                texts.append(part.text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts or not calls else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": cand.index if cand.index is not None else pos,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(cand.finish_reason, bool(calls)),
            }
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
    out = {
        "id": r.response_id or make_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": r.model_version or model,
        "choices": choices,
        "usage": usage_dict(usage),
    }
    return encode(out), usage


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
        return UpstreamStatus(
            f"provider {PROVIDER} rejected the gateway's credentials (status {status})",
            provider=PROVIDER,
            upstream_status=status,
            code="upstream_auth_failed",
        )
    if status == 429:
        return UpstreamStatus(
            f"provider {PROVIDER} is rate limiting: {message}",
            provider=PROVIDER,
            upstream_status=429,
            status=429,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=keep,
        )
    if 400 <= status < 500:
        return UpstreamStatus(
            message,
            provider=PROVIDER,
            upstream_status=status,
            status=status,
            type="invalid_request_error",
            code=gstatus,
        )
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
    return UpstreamStatus(
        f"provider {PROVIDER} failed with status {status}: {message}",
        provider=PROVIDER,
        upstream_status=status,
        status=504 if status == 504 else 502,
        code=gstatus,
        headers=keep,
    )


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


class GeminiStream:
    """Gemini ``streamGenerateContent?alt=sse`` in, OpenAI chunk frames out.

    Each event is a whole GenerateContentResponse: text parts are deltas, a
    ``functionCall`` part is one complete tool call, ``finishReason`` ends its
    choice. There is no terminator: the body's end is the end, so ``finish()``
    accepts it only after every choice has finished (else the stream was cut).
    """

    __slots__ = (
        "_calls",
        "_created",
        "_error",
        "_finished",
        "_head",
        "_include_usage",
        "_make_id",
        "_model",
        "_out",
        "_seen",
        "_sse",
        "done",
        "usage",
    )

    def __init__(
        self,
        model: str,
        include_usage: bool,
        make_id: IdFactory = new_id,
        created: int | None = None,
    ) -> None:
        from _speedups.sse import SSEDecoder

        self._sse = SSEDecoder()
        self._model = model
        self._include_usage = include_usage
        self._make_id = make_id
        self._created = created
        self._out: ChunkWriter | None = None
        self._seen: set[int] = set()  # choices whose role chunk went out
        self._calls: dict[int, int] = {}  # choice -> tool calls so far
        self._finished: set[int] = set()
        self._head = bytearray()  # the first bytes, to read a JSON error body sent as-is
        self._error: GatewayError | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        if self._out is None and len(self._head) < 65536:
            self._head += chunk[: 65536 - len(self._head)]
        frames: list[bytes] = []
        try:
            for _etype, data, _id in self._sse.feed(chunk):
                try:
                    r = _response_decoder.decode(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    raise UpstreamUnavailable(
                        f"provider {PROVIDER} sent a stream event that is not valid JSON",
                        provider=PROVIDER,
                    ) from None
                self._event(r, frames)
            if self._sse.buffered > MAX_EVENT_BYTES:
                raise UpstreamUnavailable(
                    f"provider {PROVIDER} sent an oversized stream event", provider=PROVIDER
                )
        except GatewayError as err:
            if not frames:
                raise
            self._error = err  # deliver the frames before it; the next call raises
        return frames

    def _event(self, r: _Response, frames: list[bytes]) -> None:
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

    def finish(self) -> list[bytes]:
        if self._error is not None:
            raise self._error
        if self.done:
            return []
        if self._out is None:
            err = decode_error(bytes(self._head))
            if err is not None:
                raise map_status(err.code or 500, err, {})
        if self._out is None or not self._finished or self._seen - self._finished:
            raise UpstreamUnavailable(
                f"provider {PROVIDER} ended the stream before its finishReason",
                provider=PROVIDER,
            )
        frames: list[bytes] = []
        if self._include_usage and self.usage is not None:
            frames.append(self._out.usage(self.usage))
        frames.append(DONE_FRAME)
        self.done = True
        return frames


# -- embeddings -------------------------------------------------------------------------

# What embeddings_response needs from its request (encoding, a token estimate). The
# Adapter protocol hands the response only the body, so the request leaves this
# note in the context of the task that handles both.
_EMBEDDING_REQUEST: contextvars.ContextVar[tuple[str, int]] = contextvars.ContextVar(
    "gemini_embedding_request"
)


def embeddings_to_gemini(body: dict[str, Any], model: str) -> tuple[bool, dict[str, Any]]:
    """(batch?, body) for ``:batchEmbedContents`` or ``:embedContent``."""
    inputs = body.get("input")
    texts: list[str]
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs):
        texts = inputs
    else:
        raise unsupported("input", PROVIDER, "token arrays; send text")
    extra: dict[str, Any] = {}
    dims = body.get("dimensions")
    if dims:
        extra["outputDimensionality"] = dims
    task = body.get("task_type")
    if isinstance(task, str):
        extra["taskType"] = task
    fmt = body.get("encoding_format") or "float"
    _EMBEDDING_REQUEST.set((fmt, sum(max(1, len(t) // 4) for t in texts)))
    if isinstance(inputs, str):
        return False, {"content": {"parts": [{"text": inputs}]}, **extra}
    return True, {
        "requests": [
            {"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra}
            for t in texts
        ]
    }


def gemini_embeddings_to_openai(
    content: bytes, model: str, encoding_format: str | None = None
) -> tuple[bytes, Usage]:
    try:
        r = _embed_decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamUnavailable(
            f"provider {PROVIDER} returned an embeddings body that is not valid JSON",
            provider=PROVIDER,
        ) from None
    vectors = [r.embedding] if r.embedding is not None else (r.embeddings or [])
    fmt, estimate = _EMBEDDING_REQUEST.get(("float", 0))
    fmt = encoding_format or fmt
    data = []
    for i, e in enumerate(vectors):
        emb: Any = e.values
        if fmt == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(e.values)}f", *e.values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = r.usage_metadata.prompt_token_count if r.usage_metadata else estimate
    usage = Usage(prompt_tokens=tokens, total_tokens=tokens)
    out = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return encode(out), usage


def models_to_openai(content: bytes) -> bytes:
    try:
        listed = _models_decoder.decode(content).models
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamUnavailable(
            f"provider {PROVIDER} returned a model list that is not valid JSON",
            provider=PROVIDER,
        ) from None
    data = [
        {
            "id": m.name.removeprefix("models/"),
            "object": "model",
            "created": 0,
            "owned_by": PROVIDER,
        }
        for m in listed
    ]
    return encode({"object": "list", "data": data})


__all__ = [
    "FINISH_REASONS",
    "SIGNATURE_SEP",
    "GeminiStream",
    "chat_to_gemini",
    "decode_error",
    "embeddings_to_gemini",
    "finish_reason",
    "gemini_embeddings_to_openai",
    "gemini_to_chat",
    "map_status",
    "models_to_openai",
    "split_call_id",
    "usage_from",
]
