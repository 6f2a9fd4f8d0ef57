"""Small helpers shared by the cache tests: request bodies and SSE parsing."""

from __future__ import annotations

import json
import uuid
from typing import Any


def marker() -> str:
    return f"cache-test {uuid.uuid4().hex[:16]}"


def chat(model: str, text: str, **kw: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **kw}


def sse_chunks(text: str) -> list[dict[str, Any]]:
    """The JSON events of an OpenAI stream; asserts it is well formed and ends with [DONE]."""
    events = [e for e in text.split("\n\n") if e.strip()]
    assert events, "empty stream"
    assert events[-1] == "data: [DONE]", f"stream does not end with [DONE]: {events[-1][:200]}"
    out = []
    for e in events[:-1]:
        assert e.startswith("data: "), e[:200]
        obj = json.loads(e[len("data: ") :])
        assert "error" not in obj, obj
        assert obj["object"] == "chat.completion.chunk", obj
        out.append(obj)
    return out


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client reconstructs from a stream (choice 0): content, tool calls, finish,
    usage; the way the openai SDK accumulates deltas (strings concatenate)."""
    content: str | None = None
    tools: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for c in chunks:
        if c.get("usage"):
            usage = c["usage"]
        for ch in c["choices"]:
            d = ch.get("delta") or {}
            if isinstance(d.get("content"), str):
                content = (content or "") + d["content"]
            for tc in d.get("tool_calls") or []:
                t = tools.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                t["id"] += tc.get("id") or ""
                fn = tc.get("function") or {}
                t["name"] += fn.get("name") or ""
                t["arguments"] += fn.get("arguments") or ""
            if ch.get("finish_reason"):
                finish = ch["finish_reason"]
    return {
        "content": content or None,
        "tool_calls": [tools[k] for k in sorted(tools)],
        "finish_reason": finish,
        "usage": usage,
    }


def from_completion(obj: dict[str, Any]) -> dict[str, Any]:
    """The same view of a non-streamed chat.completion (choice 0)."""
    choice = obj["choices"][0]
    msg = choice["message"]
    tools = [
        {
            "id": t["id"],
            "name": t["function"]["name"],
            "arguments": t["function"]["arguments"],
        }
        for t in msg.get("tool_calls") or []
    ]
    return {
        "content": msg.get("content") or None,
        "tool_calls": tools,
        "finish_reason": choice["finish_reason"],
        "usage": obj.get("usage"),
    }
