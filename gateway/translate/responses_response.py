"""OpenAI chat answers -> Responses ``response`` objects, and the pieces streams share.

``skeleton`` is the ``response`` object a request gets before it has output (the
request's settings echoed, as OpenAI does); ``chat_to_response`` fills it from an
OpenAI chat completion: reasoning text (``reasoning_content``, which OpenAI-
compatible servers send) as a ``reasoning`` item with a summary, text and refusal
as one ``message`` item, each tool call as a ``function_call`` item; status from
the finish reason (``length`` -> ``incomplete``, reason ``max_output_tokens``;
``content_filter`` -> ``incomplete``, reason ``content_filter``); usage with input,
cached input, output and reasoning tokens.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.translate.common import IdFactory, encode, new_id
from gateway.translate.upstream import decode_body
from gateway.wire.chat import ChoiceView, CompletionView, Usage
from gateway.wire.responses import ResponseUsage

__all__ = [
    "chat_to_response",
    "chat_usage",
    "finish_status",
    "function_call_item",
    "message_item",
    "reasoning_item",
    "response_usage",
    "skeleton",
]

_ECHOED = (  # request fields a response repeats as they came (null when absent)
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "previous_response_id",
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "prompt_cache_key",
)


def skeleton(
    body: dict[str, Any], model: str, make_id: IdFactory = new_id, created: int | None = None
) -> dict[str, Any]:
    """The ``response`` object before any output: status ``in_progress``, no usage."""
    reasoning = body.get("reasoning") or {}
    text = body.get("text") or {}
    out: dict[str, Any] = {
        "id": make_id("resp_"),
        "object": "response",
        "created_at": int(time.time()) if created is None else created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.get("store") is not False,
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "truncation": body.get("truncation") or "disabled",
        "usage": None,
        "metadata": body.get("metadata") or {},
    }
    if text.get("verbosity"):
        out["text"]["verbosity"] = text["verbosity"]
    for key in _ECHOED:
        out[key] = body.get(key)
    return out


def response_usage(u: Usage | None) -> dict[str, Any] | None:
    """OpenAI chat usage as Responses usage."""
    if u is None:
        return None
    cached = (u.prompt_tokens_details or {}).get("cached_tokens")
    reasoning = (u.completion_tokens_details or {}).get("reasoning_tokens")
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached if isinstance(cached, int) else 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {
            "reasoning_tokens": reasoning if isinstance(reasoning, int) else 0
        },
        "total_tokens": u.total_tokens or u.prompt_tokens + u.completion_tokens,
    }


def chat_usage(u: ResponseUsage | None) -> Usage | None:
    """Responses usage as OpenAI chat usage (what the pipeline settles and counts)."""
    if u is None:
        return None
    out = Usage(
        prompt_tokens=u.input_tokens,
        completion_tokens=u.output_tokens,
        total_tokens=u.total_tokens or u.input_tokens + u.output_tokens,
        prompt_tokens_details={
            "cached_tokens": u.input_tokens_details.cached_tokens if u.input_tokens_details else 0
        },
    )
    if u.output_tokens_details is not None:
        out.completion_tokens_details = {
            "reasoning_tokens": u.output_tokens_details.reasoning_tokens
        }
    return out


def finish_status(reason: str | None) -> tuple[str, dict[str, str] | None]:
    """(status, incomplete_details) for a chat finish reason."""
    if reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


# -- output items ------------------------------------------------------------------------


def reasoning_item(id: str, text: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": id, "type": "reasoning", "summary": summary}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def message_item(id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": id, "type": "message", "status": status, "role": "assistant", "content": parts}


def function_call_item(
    id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


_completion_decoder = msgspec.json.Decoder(CompletionView)


def chat_to_response(
    content: bytes, base: dict[str, Any], provider: str, make_id: IdFactory = new_id
) -> bytes:
    """An OpenAI chat completion (JSON bytes) as a Responses ``response`` (JSON bytes);
    ``base`` is the request's ``skeleton``."""
    what = "returned a body that is not a valid chat completion"
    view = decode_body(_completion_decoder, content, provider, what)
    choice = view.choices[0] if view.choices else ChoiceView()
    msg = choice.message
    output: list[dict[str, Any]] = []
    if msg.reasoning_content:
        output.append(reasoning_item(make_id("rs_"), msg.reasoning_content))
    parts = []
    if msg.content:
        parts.append(text_part(msg.content))
    if msg.refusal:
        parts.append(refusal_part(msg.refusal))
    if parts:
        output.append(message_item(make_id("msg_"), parts, "completed"))
    for call in msg.tool_calls or ():
        output.append(
            function_call_item(
                make_id("fc_"),
                call.id or make_id("call_"),
                call.function.name,
                call.function.arguments,
                "completed",
            )
        )
    status, incomplete = finish_status(choice.finish_reason)
    out = dict(base)
    out.update(
        status=status,
        incomplete_details=incomplete,
        output=output,
        usage=response_usage(view.usage),
    )
    return encode(out)
