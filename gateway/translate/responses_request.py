"""OpenAI Responses requests -> OpenAI chat requests, and conversations expanded.

Used by ``api/responses.py`` for every deployment that does not serve the Responses
API itself (Anthropic, Gemini, the mock, OpenAI-compatible chat-only servers). The
chain is

    Responses request (+ the stored conversation) -> ``responses_to_chat`` -> OpenAI
    chat dict -> the deployment's adapter -> provider -> adapter -> OpenAI chat answer
    or chunks -> ``responses_response`` / ``responses_stream`` -> Responses JSON or events

Input items: ``message`` (roles user, assistant, system, developer; parts
``input_text``, ``input_image``, ``input_file``, ``input_audio``, ``output_text``,
``refusal``), ``function_call`` (joined into the assistant message before it) and
``function_call_output`` (a tool message); ``reasoning`` items are dropped (chat
cannot carry them back); ``item_reference`` is resolved against the stored
conversation. Anything else (hosted tool calls, computer use, MCP, custom tools)
is a 400 naming the item and the provider. Tools: ``function`` only (``strict``
kept); the built-in tools OpenAI hosts are a 400 naming the tool. ``text.format``
becomes ``response_format``, ``reasoning.effort`` ``reasoning_effort``,
``max_output_tokens`` ``max_completion_tokens``. Instructions of a previous
response are not carried over (as OpenAI does): only this request's.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest, UnsupportedParameter
from gateway.translate.common import unsupported

__all__ = [
    "HOSTED_TOOLS",
    "chat_messages",
    "expand",
    "input_items",
    "portable",
    "responses_to_chat",
]

# Tools that only OpenAI's hosted Responses API runs (the model calls them, OpenAI runs them).
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "computer",
        "computer_use",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
    }
)
_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _hosted(param: str, tool: str, provider: str) -> UnsupportedParameter:
    return UnsupportedParameter(
        f"`{param}`: the built-in tool `{tool}` runs only on OpenAI's hosted Responses API; "
        f"provider {provider} cannot run it (use a function tool, or route to OpenAI)",
        param=param,
        code="unsupported_tool",
    )


def _required(param: str) -> InvalidRequest:
    return InvalidRequest(f"`{param}`: required", param=param)


def _kind(item: dict[str, Any]) -> Any:
    """An item's type; a bare ``{role, content}`` is a message (EasyInputMessage)."""
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"
    return kind


# -- conversations ------------------------------------------------------------------------


def input_items(value: Any) -> list[dict[str, Any]]:
    """A request's ``input`` as a list of items (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value)


def expand(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The whole input: the stored conversation, then this request's items, each
    ``item_reference`` replaced by the stored item it names (400 if none)."""
    by_id: dict[str, dict[str, Any]] | None = None
    out = list(history)
    for i, item in enumerate(items):
        if _kind(item) != "item_reference":
            out.append(item)
            continue
        if by_id is None:
            by_id = {str(h["id"]): h for h in history if isinstance(h.get("id"), str)}
        ref = item.get("id")
        found = by_id.get(ref) if isinstance(ref, str) else None
        if found is None:
            raise InvalidRequest(
                f"`input[{i}].id`: no item {str(ref)[:100]!r} in this conversation "
                "(item references need a previous_response_id that holds them)",
                param=f"input[{i}].id",
            )
        out.append(found)
    return out


def portable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation as input for a Responses upstream that did not make it: reasoning
    items dropped (they are valid only where they were made) and item ids removed
    (they name items the upstream never stored); call ids stay."""
    out = []
    for item in items:
        kind = _kind(item)
        if kind == "reasoning":
            continue
        if "id" in item and kind != "item_reference":
            item = {k: v for k, v in item.items() if k != "id"}
        out.append(item)
    return out


# -- input items -> chat messages -----------------------------------------------------------


def _text_parts(content: Any, param: str, provider: str) -> str:
    """Text of a system, developer or assistant message (a string or text parts)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(f"`{param}`: expected a string or a list of parts", param=param)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text") or ""))
        elif kind == "refusal":
            texts.append(str(part.get("refusal") or ""))
        else:
            raise unsupported(f"{param}[{j}].type", provider, f"a {kind!r} part here")
    return "".join(texts)


def _file_part(part: dict[str, Any], param: str, provider: str) -> dict[str, Any]:
    if part.get("file_id") or part.get("file_url"):
        which = "file_id" if part.get("file_id") else "file_url"
        raise unsupported(f"{param}.{which}", provider, "send the file inline as file_data")
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        raise _required(f"{param}.file_data")
    out: dict[str, Any] = {"file_data": data}
    if isinstance(part.get("filename"), str):
        out["filename"] = part["filename"]
    return {"type": "file", "file": out}


def _user_content(content: Any, param: str, provider: str) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(f"`{param}`: expected a string or a list of parts", param=param)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "input_image":
            if part.get("file_id"):
                raise unsupported(f"{p}.file_id", provider, "send the image as image_url")
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise _required(f"{p}.image_url")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") in ("low", "high"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            parts.append(_file_part(part, p, provider))
        elif kind == "input_audio":
            parts.append({"type": "input_audio", "input_audio": part.get("input_audio")})
        else:
            raise unsupported(f"{p}.type", provider, f"a {kind!r} part")
    if all(x["type"] == "text" for x in parts):
        return "".join(x["text"] for x in parts)
    return parts


def _call_output(output: Any, param: str, provider: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("input_text", "output_text", "text"):
                raise unsupported(f"{param}[{j}].type", provider, "only text tool outputs")
            texts.append(str(part.get("text") or ""))
        return "".join(texts)
    raise _required(param)


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise _required(f"{param}.{key}")
    return value


def chat_messages(items: list[dict[str, Any]], provider: str) -> list[dict[str, Any]]:
    """Responses input items as OpenAI chat messages (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"`{param}`: expected an object", param=param)
        kind = _kind(item)
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise InvalidRequest(
                    f"`{param}.role`: expected user, assistant, system or developer",
                    param=f"{param}.role",
                )
            content = item.get("content")
            if role == "user":
                out.append(
                    {
                        "role": "user",
                        "content": _user_content(content, f"{param}.content", provider),
                    }
                )
            else:
                text = _text_parts(content, f"{param}.content", provider)
                out.append({"role": role, "content": text})
        elif kind == "function_call":
            call = {
                "id": _string(item, "call_id", param),
                "type": "function",
                "function": {
                    "name": _string(item, "name", param),
                    "arguments": item.get("arguments") or "",
                },
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if last["content"] == "":
                    last["content"] = None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": _string(item, "call_id", param),
                    "content": _call_output(item.get("output"), f"{param}.output", provider),
                }
            )
        elif kind == "reasoning":
            continue  # valid only where it was made; chat has no way to send it back
        elif kind == "item_reference":
            raise InvalidRequest(
                f"`{param}`: item references need a previous_response_id that holds them",
                param=param,
            )
        else:
            raise unsupported(f"{param}.type", provider, f"input item type {str(kind)[:64]!r}")
    return out


# -- tools and formats ---------------------------------------------------------------------


def _tools(tools: list[dict[str, Any]], provider: str) -> list[dict[str, Any]]:
    out = []
    for k, t in enumerate(tools):
        kind = t.get("type")
        if kind in HOSTED_TOOLS:
            raise _hosted(f"tools[{k}]", str(kind), provider)
        if kind != "function":
            raise unsupported(f"tools[{k}].type", provider, f"tool type {str(kind)[:64]!r}")
        fn: dict[str, Any] = {
            "name": _string(t, "name", f"tools[{k}]"),
            "parameters": t.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(t.get("description"), str):
            fn["description"] = t["description"]
        if isinstance(t.get("strict"), bool):
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, provider: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind in HOSTED_TOOLS:
        raise _hosted("tool_choice", str(kind), provider)
    raise unsupported("tool_choice", provider, f"value {str(choice)[:80]}")


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _required("text.format.schema")
        schema: dict[str, Any] = {"name": fmt.get("name") or "output", "schema": fmt["schema"]}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        "`text.format.type`: expected text, json_object or json_schema", param="text.format.type"
    )


def _openai_only(body: dict[str, Any], provider: str) -> None:
    """Request fields that only OpenAI's hosted Responses API can honour: a 400."""
    for key, what in (
        ("prompt", "stored prompts live at OpenAI"),
        ("top_logprobs", "logprobs are not translated"),
    ):
        if body.get(key) is not None:
            raise unsupported(key, provider, what)


def responses_to_chat(
    body: dict[str, Any], items: list[dict[str, Any]], stream: bool, provider: str
) -> dict[str, Any]:
    """A Responses request (``items``: its whole input, conversation included) as an
    OpenAI chat request (``model`` kept)."""
    _openai_only(body, provider)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    messages.extend(chat_messages(items, provider))
    if not messages:
        raise _required("input")
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "parallel_tool_calls"):
        if body.get(key) is not None:
            out[key] = body[key]
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools, provider)
    choice = body.get("tool_choice")
    if choice is not None and (tools or isinstance(choice, dict)):
        out["tool_choice"] = _tool_choice(choice, provider)
    text = body.get("text") or {}
    if isinstance(text.get("format"), dict):
        fmt = _response_format(text["format"])
        if fmt is not None:
            out["response_format"] = fmt
    if text.get("verbosity"):
        out["verbosity"] = text["verbosity"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        out["reasoning_effort"] = effort
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["user"] = user
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out
