"""OpenAI chat <-> Anthropic Messages, for the ``anthropic`` adapter.

Requests (PROVIDERS.md section 2): system and developer messages are joined in
order into the top-level ``system``; tool results become ``tool_result`` blocks in
one user turn; consecutive messages with the same role are merged. Parameters
Anthropic cannot honour are a 400 naming the parameter and the provider, before
any upstream call: ``n`` > 1, ``temperature`` > 1, ``logprobs``, ``logit_bias``,
non-zero penalties, audio. Hints with no effect on the answer's shape (``seed``,
``reasoning_effort``, ``service_tier``, ``store``, ``metadata``, ``prediction``)
are dropped. ``max_tokens`` defaults to ``DEFAULT_MAX_TOKENS`` (Anthropic requires
one). ``response_format: json_object`` has no switch: the gateway appends a
one-line instruction to ``system``; ``json_schema`` uses ``output_config.format``.

Answers and streams (section 3 and 4): text blocks are joined into ``content``,
``tool_use`` blocks become ``tool_calls`` numbered 0, 1, ... in block order,
``thinking`` blocks are not surfaced, and usage adds cache reads and writes to
the prompt tokens.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import InvalidRequest, UpstreamStatus, UpstreamUnavailable
from gateway.translate.common import (
    DONE_FRAME,
    ChunkWriter,
    assistant_message,
    assistant_text,
    chat_completion,
    choice,
    encode,
    file_data_of,
    function_of,
    image_source,
    json_schema_of,
    parse_arguments,
    split_turns,
    text_of,
    tool_call,
    unsupported,
)
from gateway.translate.upstream import SSEStream, decode_body, decode_event, ended_early
from gateway.wire.anthropic import EventView, MessageView, UsageView
from gateway.wire.chat import Usage

PROVIDER = "anthropic"
DEFAULT_MAX_TOKENS = 4096
JSON_OBJECT_INSTRUCTION = "Respond with a single JSON object and nothing else."
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_message_decoder = msgspec.json.Decoder(MessageView)
_event_decoder = msgspec.json.Decoder(EventView)


# -- requests ---------------------------------------------------------------------------


def _check_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported("n", PROVIDER, "it returns one choice; n must be 1")
    t = body.get("temperature")
    if isinstance(t, (int, float)) and t > 1:
        raise unsupported("temperature", PROVIDER, f"its range is 0 to 1, got {t:g}")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported("logprobs", PROVIDER)
    if body.get("logit_bias"):
        raise unsupported("logit_bias", PROVIDER)
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name):
            raise unsupported(name, PROVIDER)
    if body.get("audio") or "audio" in (body.get("modalities") or ()):
        raise unsupported("modalities", PROVIDER, "audio output")
    if body.get("web_search_options") is not None:
        raise unsupported("web_search_options", PROVIDER)


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type")
        if kind in ("text", "input_text"):
            text = part.get("text") or ""
            if not text:
                continue  # Anthropic rejects empty text blocks
            block: dict[str, Any] = {"type": "text", "text": text}
        elif kind == "image_url":
            mime, data = image_source(part, p, PROVIDER)
            if mime is None:
                source = {"type": "url", "url": data}
            elif mime in IMAGE_TYPES:
                source = {"type": "base64", "media_type": mime, "data": data}
            else:
                raise unsupported(
                    f"{p}.image_url", PROVIDER, f"image type {mime}; use jpeg, png, gif or webp"
                )
            block = {"type": "image", "source": source}
        elif kind == "file":
            mime, data = file_data_of(part, p, PROVIDER)
            if mime != "application/pdf":
                raise unsupported(f"{p}.file", PROVIDER, f"file type {mime}; only PDF")
            block = {
                "type": "document",
                "source": {"type": "base64", "media_type": mime, "data": data},
            }
        elif kind == "input_audio":
            raise unsupported(f"{p}.input_audio", PROVIDER, "audio input")
        else:
            raise unsupported(f"{p}.type", PROVIDER, f"content part type {kind!r}")
        if isinstance(part.get("cache_control"), dict):
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _assistant_blocks(m: dict[str, Any], param: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = assistant_text(m.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for k, call in enumerate(m.get("tool_calls") or ()):
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": parse_arguments(
                    fn.get("arguments"), f"{param}.tool_calls[{k}].function.arguments"
                ),
            }
        )
    return blocks


def _tool_result(m: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    if not call_id:
        raise InvalidRequest(f"{param}.tool_call_id: required", param=f"{param}.tool_call_id")
    content = m.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if isinstance(content, list):
        block["content"] = [
            {"type": "text", "text": t}
            for t in (text_of([p], f"{param}.content") for p in content)
            if t
        ]
    else:
        block["content"] = content or ""
    return block


def _turn(role: Any, m: dict[str, Any], param: str) -> tuple[str, list[dict[str, Any]]]:
    if role == "user":
        return "user", _user_blocks(m.get("content"), f"{param}.content")
    if role == "assistant":
        return "assistant", _assistant_blocks(m, param)
    if role == "tool":
        return "user", [_tool_result(m, param)]
    raise unsupported(f"{param}.role", PROVIDER, f"role {role!r}")


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for k, t in enumerate(tools):
        fn = function_of(t, k, PROVIDER)
        tool: dict[str, Any] = {
            "name": fn.get("name"),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            tool["description"] = fn["description"]
        if fn.get("strict"):
            tool["strict"] = True
        out.append(tool)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise unsupported("tool_choice", PROVIDER, f"value {choice!r}")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # the default: leave it to the provider
    return out


def chat_to_anthropic(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request."""
    _check_unsupported(body)
    system, turns = split_turns(body.get("messages") or [], "content", _turn)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            system.append(JSON_OBJECT_INSTRUCTION)
        elif fmt.get("type") == "json_schema":
            schema = json_schema_of(fmt)
            out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if system:
        out["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if isinstance(body.get("thinking"), dict):
        out["thinking"] = body["thinking"]  # passed through from extra_body
    if stream:
        out["stream"] = True
    return out


# -- answers ----------------------------------------------------------------------------


def usage_from(u: UsageView | None) -> Usage:
    """Anthropic usage as OpenAI's: input tokens exclude cache reads and writes."""
    if u is None:
        return Usage()
    cache_write = u.cache_creation_input_tokens or 0
    cache_read = u.cache_read_input_tokens or 0
    prompt = (u.input_tokens or 0) + cache_write + cache_read
    completion = u.output_tokens or 0
    details: dict[str, Any] = {"cached_tokens": cache_read}
    if cache_write:
        details["cache_write_tokens"] = cache_write
    out = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details,
    )
    thinking = (u.output_tokens_details or {}).get("thinking_tokens")
    if isinstance(thinking, int):
        out.completion_tokens_details = {"reasoning_tokens": thinking}
    return out


def merge_usage(into: UsageView, u: UsageView | None) -> bool:
    """Overwrite ``into``'s counts with those ``u`` carries; False when there is no ``u``.

    ``message_delta`` counts are cumulative: what an event carries replaces what
    came before, and what it leaves out is kept.
    """
    if u is None:
        return False
    for name in UsageView.__struct_fields__:
        value = getattr(u, name)
        if value is not None:
            setattr(into, name, value)
    return True


def decode_message(content: bytes) -> MessageView:
    return decode_body(
        _message_decoder, content, PROVIDER, "returned a body that is not a valid Messages response"
    )


def anthropic_to_chat(content: bytes, created: int | None = None) -> tuple[bytes, Usage]:
    """An Anthropic Messages response as an OpenAI chat completion (JSON bytes)."""
    msg = decode_message(content)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.content:
        if block.type == "text" and block.text:
            texts.append(block.text)
        elif block.type == "tool_use":
            args = encode(block.input if block.input is not None else {}).decode()
            calls.append(tool_call(block.id, block.name, args))
    reason = FINISH_REASONS.get(msg.stop_reason or "", "stop")
    usage = usage_from(msg.usage)
    choices = [choice(0, assistant_message(texts, calls), reason)]
    return chat_completion(msg.id, msg.model, choices, usage, created), usage


# -- streams ----------------------------------------------------------------------------


def stream_error(error: Any) -> UpstreamStatus:
    """An ``event: error`` (e.g. overloaded_error) as the error that ends the stream."""
    etype = getattr(error, "type", None) or "api_error"
    message = getattr(error, "message", None) or "error event"
    status = 503 if etype == "overloaded_error" else 429 if etype == "rate_limit_error" else 502
    return UpstreamStatus(
        f"provider {PROVIDER} failed mid-stream: {message[:1000]}",
        provider=PROVIDER,
        upstream_status=529 if etype == "overloaded_error" else status,
        status=status,
        type=etype,
        code=etype,
    )


class AnthropicStream(SSEStream):
    """Anthropic Messages SSE in, OpenAI ``chat.completion.chunk`` frames out.

    ``message_start`` gives the first chunk (role); text and ``input_json_delta``
    fragments become content and tool-call argument deltas in order, each
    ``tool_use`` block taking the next tool-call index; ``message_delta`` gives
    the finish chunk; ``message_stop`` the usage chunk (when asked) and
    ``[DONE]``. Without ``message_stop`` the stream was cut short: ``finish()``
    raises. ``ping`` and unknown events are ignored.
    """

    __slots__ = (
        "_blocks",
        "_created",
        "_finish",
        "_include_usage",
        "_out",
        "_tools",
        "_u",
        "_with_args",
    )

    def __init__(self, include_usage: bool, created: int | None = None) -> None:
        super().__init__(PROVIDER)
        self._include_usage = include_usage
        self._created = created
        self._out: ChunkWriter | None = None
        self._blocks: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._tools = 0
        self._with_args: set[int] = set()  # tool indexes that received argument text
        self._finish: str | None = None
        self._u = UsageView()

    def _event(self, _etype: str, data: str, frames: list[bytes]) -> None:
        ev = decode_event(_event_decoder, data, PROVIDER)
        kind = ev.type
        if self.done:
            return
        if kind == "error":
            raise stream_error(ev.error)
        if kind == "message_start":
            msg = ev.message or MessageView()
            self._out = ChunkWriter(msg.id, msg.model, self._created)
            self._merge_usage(msg.usage)
            frames.append(self._out.role())
            return
        out = self._out
        if out is None:
            if kind == "ping":
                return
            raise UpstreamUnavailable(
                f"provider {PROVIDER} sent {kind[:40]} before message_start", provider=PROVIDER
            )
        if kind == "content_block_delta" and ev.delta is not None:
            d = ev.delta
            if d.type == "text_delta" and d.text:
                frames.append(out.text(0, d.text))
            elif d.type == "input_json_delta" and d.partial_json:
                tool = self._blocks.get(ev.index if ev.index is not None else -1)
                if tool is not None:
                    self._with_args.add(tool)
                    frames.append(out.tool_args(0, tool, d.partial_json))
        elif kind == "content_block_stop":
            tool = self._blocks.get(ev.index if ev.index is not None else -1)
            if tool is not None and tool not in self._with_args:
                # No input_json_delta at all: an empty join means {} (valid JSON for clients).
                self._with_args.add(tool)
                frames.append(out.tool_args(0, tool, "{}"))
        elif kind == "content_block_start" and ev.content_block is not None:
            block = ev.content_block
            if block.type == "text" and block.text:
                frames.append(out.text(0, block.text))
            elif block.type == "tool_use":
                tool = self._blocks[ev.index if ev.index is not None else -1] = self._tools
                self._tools += 1
                args = encode(block.input).decode() if block.input else ""
                if args:
                    self._with_args.add(tool)
                frames.append(out.tool_start(0, tool, block.id or "", block.name or "", args))
        elif kind == "message_delta":
            self._merge_usage(ev.usage)
            reason = ev.delta.stop_reason if ev.delta is not None else None
            self._finish = FINISH_REASONS.get(reason or "", "stop")
            frames.append(out.finish(0, self._finish))
        elif kind == "message_stop":
            if self._finish is None:  # no message_delta: still a proper end
                self._finish = "stop"
                frames.append(out.finish(0, self._finish))
            self.usage = usage_from(self._u)
            if self._include_usage:
                frames.append(out.usage(self.usage))
            frames.append(DONE_FRAME)
            self.done = True

    def _merge_usage(self, u: UsageView | None) -> None:
        if merge_usage(self._u, u):
            self.usage = usage_from(self._u)

    def _end_of_body(self) -> list[bytes]:
        if self.done:
            return []
        raise ended_early(PROVIDER, "message_stop")


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "FINISH_REASONS",
    "AnthropicStream",
    "anthropic_to_chat",
    "chat_to_anthropic",
    "decode_message",
    "merge_usage",
    "stream_error",
    "usage_from",
]
