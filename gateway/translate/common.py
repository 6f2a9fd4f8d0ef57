"""Helpers shared by the translators: request parts, OpenAI answers and chunk frames, ids.

Data URLs and content parts, assistant text, tools and JSON schemas on the way
in; chat completions, choices, tool calls, usage and chunk frames on the way
out; safe URL path segments, ids and key scrubbing.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec

from gateway.errors import InvalidRequest, UnsupportedParameter
from gateway.sse_write import DONE as DONE_FRAME
from gateway.sse_write import event
from gateway.wire.chat import Usage

_encode = msgspec.json.Encoder().encode
MAX_EVENT_BYTES = 8 * 1024 * 1024  # one SSE event longer than this is not a chat stream

IdFactory = Callable[[str], str]


def new_id(prefix: str) -> str:
    """A fresh random id such as ``call_3f2a...`` (24 hex digits)."""
    return prefix + os.urandom(12).hex()


def counter_ids() -> IdFactory:
    """Deterministic ids (``call_0``, ``call_1``...) for tests and golden files."""
    n = -1

    def make(prefix: str) -> str:
        nonlocal n
        n += 1
        return f"{prefix}{n}"

    return make


# -- URL path segments ----------------------------------------------------------------

_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,128}")


def path_segment(name: str, provider: str, what: str = "model") -> str:
    """``name`` if it is safe as one URL path segment, else a 400 naming the provider.

    Model and deployment names go into upstream URL paths (Gemini, Azure). Only
    letters, digits, ``.``, ``_`` and ``-`` are allowed, and not a name made of dots,
    so a client-chosen name can never add a segment, a query, a fragment or a host.
    """
    if not _SEGMENT.fullmatch(name) or not name.strip("."):
        raise InvalidRequest(
            f"`{name[:100]}` is not a valid {provider} {what} name "
            "(letters, digits, '.', '_' and '-' only)",
            param="model",
            code="invalid_model",
        )
    return name


# -- content parts --------------------------------------------------------------------

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[\w-]+=[^;,]*)*);base64,", re.ASCII)


def parse_data_url(url: str, param: str, provider: str) -> tuple[str, str]:
    """``data:<mime>;base64,<b64>`` -> (mime, b64). Anything else is a 400."""
    m = _DATA_URL.match(url)
    if m is None:
        raise InvalidRequest(
            f"{param}: expected a base64 data URL (data:<type>;base64,...) for {provider}",
            param=param,
        )
    data = url[m.end() :]
    if not data:
        raise InvalidRequest(f"{param}: the data URL is empty", param=param)
    return m.group(1).lower(), data


def image_url_of(part: dict[str, Any], param: str) -> str:
    """The URL of an OpenAI ``image_url`` part (object form, or a bare string)."""
    iu = part.get("image_url")
    url = iu.get("url") if isinstance(iu, dict) else iu
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{param}.image_url.url: required", param=f"{param}.image_url.url")
    return url


def file_data_of(part: dict[str, Any], param: str, provider: str) -> tuple[str, str]:
    """An OpenAI ``file`` part as (mime, base64); only inline ``file_data`` can travel."""
    f = part.get("file")
    if not isinstance(f, dict):
        raise InvalidRequest(f"{param}.file: required", param=f"{param}.file")
    if f.get("file_id") and not f.get("file_data"):
        raise UnsupportedParameter(
            f"{param}.file.file_id: OpenAI file ids cannot be sent to {provider}; "
            "send the file inline as file_data",
            param=f"{param}.file.file_id",
        )
    data = f.get("file_data")
    if not isinstance(data, str) or not data:
        raise InvalidRequest(f"{param}.file.file_data: required", param=f"{param}.file.file_data")
    if data.startswith("data:"):
        return parse_data_url(data, f"{param}.file.file_data", provider)
    # Raw base64 (some clients omit the data-URL prefix): the filename tells the type.
    name = str(f.get("filename") or "").lower()
    if name.endswith(".pdf") or not name:
        return "application/pdf", data
    raise UnsupportedParameter(
        f"{param}.file: {provider} accepts PDF files only", param=f"{param}.file"
    )


def text_of(content: Any, param: str) -> str:
    """A message's content as plain text (string, or a list of text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
            raise UnsupportedParameter(
                f"{param}[{j}]: only text parts are allowed here", param=f"{param}[{j}]"
            )
        texts.append(str(part.get("text") or ""))
    return "".join(texts)


def parse_arguments(arguments: Any, param: str) -> dict[str, Any]:
    """An assistant tool call's ``arguments`` string as the object providers want."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except (msgspec.DecodeError, TypeError):
        raise InvalidRequest(f"{param}: not valid JSON", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param}: must be a JSON object", param=param)
    return value


def image_source(part: dict[str, Any], param: str, provider: str) -> tuple[str | None, str]:
    """An ``image_url`` part as (mime, base64) for a data URL, or (None, url) for http(s)."""
    url = image_url_of(part, param)
    if url.startswith("data:"):
        return parse_data_url(url, f"{param}.image_url.url", provider)
    if url.startswith("https://") or url.startswith("http://"):
        return None, url
    raise InvalidRequest(
        f"{param}.image_url.url: expected an https URL or a data URL",
        param=f"{param}.image_url.url",
    )


def assistant_text(content: Any) -> str:
    """An assistant message's text: a string, or its text/output_text parts joined."""
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "output_text")
        )
    return content or ""


def function_of(tool: dict[str, Any], k: int, provider: str) -> dict[str, Any]:
    """``tools[k]``'s ``function`` object; any other kind of tool is a 400."""
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise unsupported(f"tools[{k}].type", provider, "only function tools")
    return cast("dict[str, Any]", tool["function"])


def json_schema_of(fmt: dict[str, Any]) -> dict[str, Any]:
    """The schema of a ``response_format`` of type ``json_schema`` (required)."""
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "response_format.json_schema.schema: required",
            param="response_format.json_schema.schema",
        )
    return schema


# (role, message, "messages[i]") -> (the provider's turn role, its blocks or parts)
TurnMaker = Callable[[Any, dict[str, Any], str], tuple[str, list[dict[str, Any]]]]


def split_turns(
    messages: list[dict[str, Any]], key: str, make_turn: TurnMaker
) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, turns): system and developer texts in order; each other message
    through ``make_turn``, an empty one dropped, consecutive ones with the same role
    merged into one ``{"role", key}`` turn."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        role = m.get("role")
        if role in ("system", "developer"):
            text = text_of(m.get("content"), f"{param}.content")
            if text:
                system.append(text)
            continue
        turn_role, items = make_turn(role, m, param)
        if not items:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1][key].extend(items)
        else:
            turns.append({"role": turn_role, key: items})
    return system, turns


def unsupported(param: str, provider: str, detail: str = "") -> UnsupportedParameter:
    extra = f" ({detail})" if detail else ""
    return UnsupportedParameter(
        f"`{param}` is not supported by provider {provider}{extra}", param=param
    )


# -- usage ----------------------------------------------------------------------------


def usage_dict(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.prompt_tokens_details is not None:
        out["prompt_tokens_details"] = u.prompt_tokens_details
    if u.completion_tokens_details is not None:
        out["completion_tokens_details"] = u.completion_tokens_details
    return out


# -- OpenAI answers -------------------------------------------------------------------


def tool_call(id: Any, name: Any, arguments: str) -> dict[str, Any]:
    """One entry of an OpenAI message's ``tool_calls``."""
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant_message(texts: list[str], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An OpenAI assistant message; ``content`` is null only when there are just tool calls."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return message


def choice(index: int, message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def chat_completion(
    id: Any, model: Any, choices: list[dict[str, Any]], usage: Usage, created: int | None
) -> bytes:
    """An OpenAI ``chat.completion`` body (JSON bytes)."""
    out = {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
        "usage": usage_dict(usage),
    }
    return _encode(out)


# -- OpenAI chunks --------------------------------------------------------------------


class ChunkWriter:
    """Builds OpenAI ``chat.completion.chunk`` SSE frames sharing one id/created/model."""

    __slots__ = ("_head",)

    def __init__(self, id: str, model: str, created: int | None = None) -> None:
        head = {
            "id": id,
            "object": "chat.completion.chunk",
            "created": int(time.time()) if created is None else created,
            "model": model,
        }
        # '{"id":..,"model":..}' -> '{"id":..,"model":..,"choices":'
        self._head = _encode(head)[:-1] + b',"choices":'

    def frame(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        tail = b"}" if usage is None else b',"usage":' + _encode(usage_dict(usage)) + b"}"
        return event(self._head + _encode(choices) + tail)

    def delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return self.frame([{"index": index, "delta": delta, "finish_reason": None}])

    def role(self, index: int = 0) -> bytes:
        return self.delta(index, {"role": "assistant", "content": ""})

    def text(self, index: int, text: str) -> bytes:
        return self.delta(index, {"content": text})

    def tool_start(self, index: int, tool_index: int, id: str, name: str, args: str = "") -> bytes:
        call = {
            "index": tool_index,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": args},
        }
        return self.delta(index, {"tool_calls": [call]})

    def tool_args(self, index: int, tool_index: int, fragment: str) -> bytes:
        call = {"index": tool_index, "function": {"arguments": fragment}}
        return self.delta(index, {"tool_calls": [call]})

    def finish(self, index: int, reason: str) -> bytes:
        return self.frame([{"index": index, "delta": {}, "finish_reason": reason}])

    def usage(self, usage: Usage) -> bytes:
        return self.frame([], usage)


# -- retry hints ----------------------------------------------------------------------


def seconds_header(value: float) -> str:
    """A ``retry-after`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(value)))


def scrub(text: str, secret: str | None) -> str:
    """``text`` with any copy of ``secret`` replaced; upstream messages may echo keys."""
    if secret and secret in text:
        return text.replace(secret, "***")
    return text


def encode(obj: Any) -> bytes:
    return _encode(obj)


__all__ = [
    "DONE_FRAME",
    "MAX_EVENT_BYTES",
    "ChunkWriter",
    "IdFactory",
    "assistant_message",
    "assistant_text",
    "chat_completion",
    "choice",
    "counter_ids",
    "encode",
    "file_data_of",
    "function_of",
    "image_source",
    "image_url_of",
    "json_schema_of",
    "new_id",
    "parse_arguments",
    "parse_data_url",
    "path_segment",
    "scrub",
    "seconds_header",
    "split_turns",
    "text_of",
    "tool_call",
    "unsupported",
    "usage_dict",
]
