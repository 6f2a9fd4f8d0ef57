"""Anthropic Messages in front of any provider: requests to OpenAI chat, answers back.

Used by ``api/messages.py`` when the deployment is not Anthropic (an Anthropic
deployment gets the body as it came). The chain is

    Anthropic request -> ``messages_to_chat`` -> OpenAI-shaped dict -> the deployment's
    adapter -> provider -> adapter -> OpenAI answer/chunks -> ``chat_to_message`` /
    ``AnthropicEventStream`` -> Anthropic JSON / Anthropic events

Policies (documented in the README's provider table): ``thinking``, ``top_k`` and
``cache_control`` have no OpenAI equivalent and are dropped; a ``tool_result`` with
``is_error`` is sent as a tool message whose text starts with ``Error:``; server
tools (``web_search_...`` and other typed tools) are a 400; OpenAI does not say
which stop sequence matched, so a stop becomes ``end_turn``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import GatewayError, InvalidRequest, UpstreamUnavailable
from gateway.sse_write import event as sse_event
from gateway.translate.common import IdFactory, encode, new_id, unsupported
from gateway.wire.anthropic import ErrorObject, ErrorResponse
from gateway.wire.chat import ChoiceView, CompletionView, Usage

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    }
)
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# -- requests ---------------------------------------------------------------------------


def _source_url(source: dict[str, Any], param: str, provider: str) -> str:
    kind = source.get("type")
    if kind == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if kind == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise unsupported(f"{param}.source.type", provider, f"source type {kind!r}")


def _tool_result_text(block: dict[str, Any], param: str, provider: str) -> str:
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise unsupported(f"{param}.content[{k}]", provider, "only text tool results")
            texts.append(str(part.get("text") or ""))
        text = "".join(texts)
    return "Error: " + text if block.get("is_error") else text


def _user(content: list[dict[str, Any]], param: str, provider: str) -> list[dict[str, Any]]:
    """One Anthropic user turn as OpenAI messages: tool results first, then the rest."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        p = f"{param}[{j}]"
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            url = _source_url(block.get("source") or {}, p, provider)
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "document":
            source = block.get("source") or {}
            if source.get("type") == "text":
                parts.append({"type": "text", "text": str(source.get("data") or "")})
            elif source.get("type") == "base64":
                data_url = _source_url(source, p, provider)
                parts.append(
                    {"type": "file", "file": {"filename": "document.pdf", "file_data": data_url}}
                )
            else:
                raise unsupported(f"{p}.source.type", provider, "URL documents")
        elif kind == "tool_result":
            tools.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id"),
                    "content": _tool_result_text(block, p, provider),
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise unsupported(f"{p}.type", provider, f"block type {kind!r}")
    out = tools
    if parts:
        plain = all(x["type"] == "text" for x in parts)
        body: Any = "".join(x["text"] for x in parts) if plain else parts
        out.append({"role": "user", "content": body})
    return out


def _assistant(content: list[dict[str, Any]], param: str, provider: str) -> dict[str, Any] | None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": encode(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise unsupported(f"{param}[{j}].type", provider, f"block type {kind!r}")
    text = "".join(texts)
    if not text and not calls:
        return None
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(
        str(b.get("text") or "") for b in system or () if isinstance(b, dict) and b.get("text")
    )


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind == "none":
        return "none"
    return "auto"


def chat_messages(body: dict[str, Any], provider: str) -> list[dict[str, Any]]:
    """The ``system`` and ``messages`` of an Anthropic request as OpenAI messages."""
    out: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for i, m in enumerate(body.get("messages") or ()):
        role, content = m.get("role"), m.get("content")
        param = f"messages[{i}].content"
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif role == "user":
            out.extend(_user(content or [], param, provider))
        else:
            msg = _assistant(content or [], param, provider)
            if msg is not None:
                out.append(msg)
    return out


def chat_tools(body: dict[str, Any], provider: str) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if not tools:
        return None
    out = []
    for k, t in enumerate(tools):
        if t.get("type") not in (None, "custom"):
            raise unsupported(f"tools[{k}].type", provider, f"server tool {t.get('type')!r}")
        fn: dict[str, Any] = {
            "name": t.get("name"),
            "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
        }
        if t.get("description"):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def messages_to_chat(body: dict[str, Any], stream: bool, provider: str) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request (``model`` kept)."""
    out: dict[str, Any] = {
        "model": body.get("model"),
        "messages": chat_messages(body, provider),
        "max_completion_tokens": body.get("max_tokens"),
    }
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    tools = chat_tools(body, provider)
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            out["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = user
    fmt = (body.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest(
                "output_config.format.schema: required", param="output_config.format.schema"
            )
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt["schema"]},
        }
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# -- answers ----------------------------------------------------------------------------


def anthropic_usage(u: Usage | None) -> dict[str, int]:
    """OpenAI usage as Anthropic's: input tokens exclude cache reads and writes."""
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = u.prompt_tokens_details or {}
    read = details.get("cached_tokens")
    write = details.get("cache_write_tokens")
    read = read if isinstance(read, int) else 0
    write = write if isinstance(write, int) else 0
    return {
        "input_tokens": max(0, u.prompt_tokens - read - write),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
    }


_completion_decoder = msgspec.json.Decoder(CompletionView)


def _tool_input(arguments: str, provider: str) -> Any:
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        raise UpstreamUnavailable(
            f"provider {provider} returned tool arguments that are not valid JSON",
            provider=provider,
        ) from None
    return value if isinstance(value, dict) else {"value": value}


def chat_to_message(
    content: bytes, model: str, provider: str, make_id: IdFactory = new_id
) -> bytes:
    """An OpenAI chat completion (JSON bytes) as an Anthropic Message (JSON bytes)."""
    try:
        view = _completion_decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamUnavailable(
            f"provider {provider} returned a body that is not a valid chat completion",
            provider=provider,
        ) from None
    choice = view.choices[0] if view.choices else ChoiceView()
    msg = choice.message
    blocks: list[dict[str, Any]] = []
    if msg.content:
        blocks.append({"type": "text", "text": msg.content})
    if msg.refusal:
        blocks.append({"type": "text", "text": msg.refusal})
    for call in msg.tool_calls or ():
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id or make_id("toolu_"),
                "name": call.function.name,
                "input": _tool_input(call.function.arguments, provider),
            }
        )
    reason = STOP_REASONS.get(choice.finish_reason or "", "end_turn")
    if msg.refusal:
        reason = "refusal"
    out = {
        "id": make_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": anthropic_usage(view.usage),
    }
    return encode(out)


# -- errors -----------------------------------------------------------------------------


def error_type(err: GatewayError) -> str:
    """Anthropic's error type: a specific upstream type is kept; otherwise by status."""
    if err.type in ERROR_TYPES and err.type != "invalid_request_error":
        return err.type
    return _STATUS_TYPES.get(err.status) or (err.type if err.type in ERROR_TYPES else "api_error")


def status_error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status the gateway itself answers with."""
    return _STATUS_TYPES.get(status, "api_error")


def error_body(err: GatewayError) -> bytes:
    return encode(ErrorResponse(error=ErrorObject(type=error_type(err), message=err.message)))


def error_event(err: GatewayError) -> bytes:
    """The ``event: error`` that ends a broken ``/v1/messages`` stream."""
    return sse_event(error_body(err), b"error")


__all__ = [
    "anthropic_usage",
    "chat_messages",
    "chat_to_message",
    "chat_tools",
    "error_body",
    "error_event",
    "error_type",
    "messages_to_chat",
    "status_error_type",
]
