"""Prompt token counts for chat and embeddings requests, before they are sent.

The rate limiter reserves tokens from these numbers; settle reconciles the reservation with
the usage the provider reports. Text is counted exactly (``_speedups.tokens``: the same
counts as tiktoken); the chat framing follows OpenAI's cookbook "How to count tokens with
tiktoken", which matches the API's ``prompt_tokens`` for plain messages and tools:

* 3 tokens per message, plus the tokens of every string field (``role``, ``content``,
  ``name``, ``tool_call_id``, ...), plus 1 per ``name``; 3 more for the reply priming.
* ``tool_calls`` / ``function_call``: the function name and its arguments string.
* ``content`` given as parts: ``text`` (and ``refusal``) parts by their text. An
  ``image_url`` part is a fixed estimate, because the gateway does not fetch images:
  ``IMAGE_LOW_DETAIL`` (85) with ``"detail": "low"``, else ``IMAGE_DEFAULT`` (765, what
  OpenAI charges a 1024x1024 image at high detail: 85 + 4 tiles x 170). Other parts
  (audio, files) count their short string fields and not their base64 payloads: a
  lower bound.
* tools, with the cookbook's function-calling rule: per function 7 tokens (o200k models;
  10 for cl100k ones) + ``"name:description"``; if it has properties, 3 + per property
  3 + ``"key:type:description"`` (an enum adds -3 + per item 3 + the item); 12 at the
  end. Nested schemas beyond the top-level properties are not counted.

Whatever the shape of the (valid JSON) input, nothing here raises: unknown roles, part
types and fields are counted best-effort.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from _speedups.tokens import count_tokens

__all__ = [
    "IMAGE_DEFAULT",
    "IMAGE_LOW_DETAIL",
    "chat_estimate",
    "count_chat_tokens",
    "count_text_tokens",
    "encoding_for_model",
]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_LOW_DETAIL = 85
IMAGE_DEFAULT = 765

# The cookbook's function-calling constants (func_init depends on the model family).
FUNC_INIT = {"o200k_base": 7, "cl100k_base": 10}
PROP_INIT = 3
PROP_KEY = 3
ENUM_INIT = -3
ENUM_ITEM = 3
FUNC_END = 12

_O200K_PREFIXES = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "chatgpt-4o",
    "o1",
    "o3",
    "o4",
)
_CL100K_PREFIXES = (
    "gpt-4",
    "gpt-3.5",
    "gpt-35",  # Azure's spelling
    "text-embedding-3",
    "text-embedding-ada-002",
    "davinci-002",
    "babbage-002",
)
# Fields of non-text content parts that carry payloads (base64, URLs), not prompt text.
_PAYLOAD_KEYS = frozenset({"data", "file_data", "url", "image_url", "file_id", "type"})


@lru_cache(maxsize=1024)
def encoding_for_model(model: str) -> str:
    """The tiktoken encoding that counts tokens for ``model`` (``provider/`` prefix allowed).

    OpenAI models get their real encoding: ``o200k_base`` for gpt-4o, gpt-4.1, gpt-4.5,
    gpt-5, o1/o3/o4 and chatgpt-4o; ``cl100k_base`` for gpt-4, gpt-3.5 and the
    text-embedding-3 / ada-002 models. Anthropic (``claude*``), Gemini (``gemini*``) and
    anything unknown get ``o200k_base`` as an estimate only: those providers tokenize
    differently, and the count is corrected later by the usage the provider reports.
    """
    name = model.rsplit("/", 1)[-1].strip().lower()
    if name.startswith("ft:"):  # fine-tuned: ft:<base>:<org>::<id>
        name = name[3:].split(":", 1)[0]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def _text(value: object, encoding: str) -> int:
    """Tokens of a scalar written as text; 0 for None and containers."""
    if isinstance(value, str):
        return count_tokens(value, encoding)
    if value is None or isinstance(value, (list, dict)):
        return 0
    if isinstance(value, bool):
        return count_tokens("true" if value else "false", encoding)
    if isinstance(value, int) and value.bit_length() > 64:
        return value.bit_length() // 10 + 1  # about 3 digits per token; str() may refuse
    return count_tokens(str(value), encoding)


def _strings(value: object, encoding: str, skip: frozenset[str] = frozenset()) -> int:
    """Tokens of every string inside ``value`` (dict values not under ``skip`` keys).

    Iterative: a deeply nested request must not raise RecursionError.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(v for k, v in item.items() if k not in skip)
        elif isinstance(item, list):
            stack.extend(item)
        else:
            total += _text(item, encoding)
    return total


def _image(part: Mapping[str, object]) -> int:
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, Mapping) else part.get("detail")
    return IMAGE_LOW_DETAIL if detail == "low" else IMAGE_DEFAULT


def _content(content: object, encoding: str) -> int:
    if isinstance(content, str):
        return count_tokens(content, encoding)
    if not isinstance(content, list):
        return _strings(content, encoding)
    total = 0
    for part in content:
        if not isinstance(part, Mapping):
            total += _strings(part, encoding)
            continue
        kind = part.get("type")
        if kind in ("text", "input_text") or (kind is None and "text" in part):
            total += _text(part.get("text"), encoding)
        elif kind == "refusal":
            total += _text(part.get("refusal"), encoding)
        elif kind in ("image_url", "input_image", "image"):
            total += _image(part)
        else:
            total += _strings(part, encoding, _PAYLOAD_KEYS)
    return total


def _function_call(call: object, encoding: str) -> int:
    if not isinstance(call, Mapping):
        return _strings(call, encoding)
    function = call.get("function", call)
    if not isinstance(function, Mapping):
        return _strings(function, encoding)
    return _text(function.get("name"), encoding) + _strings(function.get("arguments"), encoding)


def _message(message: object, encoding: str) -> int:
    if not isinstance(message, Mapping):
        return _strings(message, encoding)
    total = 0
    for key, value in message.items():
        if key == "content":
            total += _content(value, encoding)
        elif key == "tool_calls":
            calls = value if isinstance(value, list) else [value]
            total += sum(_function_call(call, encoding) for call in calls)
        elif key == "function_call":
            total += _function_call(value, encoding)
        elif key == "audio":  # a reference to an earlier audio reply: {"id": ...}
            continue
        else:
            total += _strings(value, encoding)
        if key == "name":
            total += TOKENS_PER_NAME
    return total


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def _type_name(value: object) -> str:
    if isinstance(value, list):
        return "|".join(map(str, value))
    return "" if value is None else str(value)


def _tool(tool: object, encoding: str) -> int:
    if not isinstance(tool, Mapping):
        return _strings(tool, encoding)
    function = tool.get("function", tool)
    if not isinstance(function, Mapping):
        return _strings(function, encoding)
    name = _type_name(function.get("name"))
    description = _strip_period(_type_name(function.get("description")))
    total = FUNC_INIT[encoding] + count_tokens(f"{name}:{description}", encoding)
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if isinstance(properties, Mapping) and properties:
        total += PROP_INIT
        for key, prop in properties.items():
            total += PROP_KEY
            if not isinstance(prop, Mapping):
                total += count_tokens(f"{key}::", encoding)
                continue
            enum = prop.get("enum")
            if isinstance(enum, list):
                total += ENUM_INIT
                for item in enum:
                    total += ENUM_ITEM + _text(item, encoding)
            p_type = _type_name(prop.get("type"))
            p_desc = _strip_period(_type_name(prop.get("description")))
            total += count_tokens(f"{key}:{p_type}:{p_desc}", encoding)
    return total


def count_chat_tokens(
    messages: list[dict[str, object]], model: str, tools: list[dict[str, object]] | None = None
) -> int:
    """Prompt tokens of a chat completion request (the rules are in the module docstring).

    ``messages`` and ``tools`` are plain dicts as decoded from the OpenAI request JSON; any
    other shape is counted best-effort instead of raising. Bare function definitions (the
    legacy ``functions`` parameter) are accepted in ``tools`` too.
    """
    encoding = encoding_for_model(model) if isinstance(model, str) else "o200k_base"
    items = messages if isinstance(messages, list) else [messages]
    total = REPLY_PRIMING
    for message in items:
        total += TOKENS_PER_MESSAGE + _message(message, encoding)
    if isinstance(tools, list) and tools:
        total += sum(_tool(tool, encoding) for tool in tools) + FUNC_END
    elif tools and not isinstance(tools, list):
        total += _strings(tools, encoding)
    return max(total, 0)


def count_text_tokens(text: str | list[str] | list[int] | list[list[int]], model: str) -> int:
    """Tokens of an embeddings ``input``: a string, strings, token ids, or lists of ids.

    Token ids are already tokens: they count one each.
    """
    encoding = encoding_for_model(model) if isinstance(model, str) else "o200k_base"
    if isinstance(text, str):
        return count_tokens(text, encoding)
    if not isinstance(text, list):
        return _strings(text, encoding)
    total = 0
    for item in text:
        if isinstance(item, int) and not isinstance(item, bool):
            total += 1
        elif isinstance(item, list):
            total += sum(
                1 if isinstance(i, int) and not isinstance(i, bool) else _strings(i, encoding)
                for i in item
            )
        else:
            total += _strings(item, encoding)
    return total


def chat_estimate(body: Mapping[str, object], model: str, default_max: int) -> tuple[int, int]:
    """``(prompt, completion)`` tokens an OpenAI chat request may use: the exact prompt,
    and ``max_completion_tokens``/``max_tokens`` (else ``default_max``) times ``n``."""
    tools = body.get("tools") or body.get("functions")
    messages = body.get("messages")
    prompt = count_chat_tokens(messages if isinstance(messages, list) else [], model, tools)  # type: ignore[arg-type]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        limit = default_max
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return prompt, limit * choices
