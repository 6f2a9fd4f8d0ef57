"""Cache-key throughput on realistic chat requests of about 2 KiB and 64 KiB.

Both bodies are JSON-decoded with msgspec, as the gateway does: a system
prompt, tools with JSON-schema parameters, then user/assistant turns
(one assistant turn calls a tool) and sampling parameters.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import msgspec
import pytest

LOREM = (
    "The gateway relays chat completions to several upstream providers, applies per-key "
    "rate limits and budgets, caches deterministic answers and records usage for billing. "
)


def tool(name: str, n_params: int) -> dict[str, Any]:
    props = {
        f"{name}_arg{i}": {
            "type": ["string", "integer", "boolean"][i % 3],
            "description": f"Argument {i} of {name}: what it selects and its unit.",
            **({"enum": ["celsius", "fahrenheit"]} if i % 4 == 0 else {}),
        }
        for i in range(n_params)
    }
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Look up {name.replace('_', ' ')} for the user.",
            "parameters": {
                "type": "object",
                "properties": props,
                "required": sorted(props)[:2],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }


def chat_request(turns: int, turn_chars: int, tools: int, params: int) -> dict[str, Any]:
    text = (LOREM * (turn_chars // len(LOREM) + 1))[:turn_chars]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse. " + text}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: {text}"})
        if i == 1:
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_8TkXkU2qF0",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                }
            )
            messages.append(
                {"role": "tool", "tool_call_id": "call_8TkXkU2qF0", "content": '{"temp_c": 3}'}
            )
        messages.append({"role": "assistant", "content": f"Answer {i}: {text}"})
    body = {
        "model": "gpt-4o-2024-08-06",
        "messages": messages,
        "tools": [tool(name, params) for name in ["get_weather", "search_docs", "book_meeting"]]
        + [tool(f"internal_api_{i}", params) for i in range(tools - 3)],
        "tool_choice": "auto",
        "temperature": 0.2,
        "top_p": 1,
        "max_completion_tokens": 1024,
        "seed": 42,
        "stop": ["\n\nUser:"],
        "response_format": {"type": "text"},
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "user-1234",
    }
    # round-trip through JSON so types and key order are what the gateway sees
    return msgspec.json.decode(msgspec.json.encode(body))


REQUESTS = {
    "2k": chat_request(turns=2, turn_chars=100, tools=3, params=1),
    "64k": chat_request(turns=24, turn_chars=980, tools=12, params=8),
}
SIZES = {name: len(msgspec.json.encode(body)) for name, body in REQUESTS.items()}


@pytest.mark.benchmark(group="cachekey")
@pytest.mark.parametrize("size", ["2k", "64k"])
def test_cachekey_chat(benchmark, cachekey_impl: ModuleType, size: str) -> None:
    mod = cachekey_impl
    body = REQUESTS[size]
    benchmark.extra_info["bytes"] = SIZES[size]
    digest = benchmark(mod.cache_key, "tenant-42", "chat", body)
    assert len(digest) == 64
