"""OpenAI chat requests -> Gemini generateContent bodies, for the ``gemini`` adapter.

PROVIDERS.md section 2: system and developer messages become
``systemInstruction`` (one part each, in order); ``assistant`` is role ``model``;
tool results are ``functionResponse`` parts in a ``user`` turn, named from the
earlier tool call with the same id (Gemini requires the name); consecutive turns
with the same role are merged. Images as data URLs travel as ``inlineData``;
https image URLs as ``fileData`` (the gateway does no I/O, so it does not fetch
them; the MIME type is guessed from the extension). PDFs and audio travel as
``inlineData``. ``n`` is ``candidateCount``. ``reasoning_effort`` is a
``thinkingConfig.thinkingBudget`` (``THINKING_BUDGETS``, as Google's OpenAI
compatibility maps it; ``none`` turns thinking off). Not honourable, so a 400: ``logprobs``,
``logit_bias``, audio output, web search. ``parallel_tool_calls: false`` has no
Gemini equivalent and is ignored. A tool call id carrying a ``thoughtSignature``
(see ``gemini_response.SIGNATURE_SEP``) gives it back to Gemini.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import InvalidRequest
from gateway.translate.common import (
    assistant_text,
    file_data_of,
    function_of,
    image_source,
    json_schema_of,
    parse_arguments,
    split_turns,
    text_of,
    unsupported,
)
from gateway.translate.gemini_response import PROVIDER, SIGNATURE_SEP

# reasoning_effort -> thinkingBudget (tokens): Google's own OpenAI-compatibility mapping.
THINKING_BUDGETS = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
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
            mime, data = image_source(part, p, PROVIDER)
            if mime is None:
                parts.append({"fileData": {"mimeType": _image_mime(data), "fileUri": data}})
            else:
                parts.append({"inlineData": {"mimeType": mime, "data": data}})
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
    text = assistant_text(m.get("content"))
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
    names: dict[str, str] = {}  # tool call id -> function name

    def turn(role: Any, m: dict[str, Any], param: str) -> tuple[str, list[dict[str, Any]]]:
        if role == "user":
            return "user", _user_parts(m.get("content"), f"{param}.content")
        if role == "assistant":
            return "model", _assistant_parts(m, param, names)
        if role == "tool":
            return "user", [_function_response(m, param, names)]
        raise unsupported(f"{param}.role", PROVIDER, f"role {role!r}")

    return split_turns(messages, "parts", turn)


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    decls = []
    for k, t in enumerate(tools):
        fn = function_of(t, k, PROVIDER)
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
            schema = json_schema_of(fmt)
            gc["responseMimeType"] = "application/json"
            gc["responseJsonSchema"] = schema
    budget = THINKING_BUDGETS.get(str(body.get("reasoning_effort")))
    if budget is not None:
        gc["thinkingConfig"] = {"thinkingBudget": budget}
    if gc:
        out["generationConfig"] = gc
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
        cfg = _tool_config(body.get("tool_choice"))
        if cfg is not None:
            out["toolConfig"] = cfg
    return out


__all__ = ["chat_to_gemini", "split_call_id"]
