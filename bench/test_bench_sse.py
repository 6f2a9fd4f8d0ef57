"""SSE decoder throughput: a 200-event OpenAI chat stream in ~1.5 KiB network chunks."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

CHUNK = 1536
EVENTS = 200


def openai_stream(n: int = EVENTS) -> bytes:
    words = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]
    out = []
    for i in range(n):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": words[i % 10]}
        chunk = {
            "id": "chatcmpl-A9xQ2mZ7rT4kLp0vW3sN8bYc",
            "object": "chat.completion.chunk",
            "created": 1727192311,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        }
        out.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


STREAM = openai_stream()
CHUNKS = [STREAM[i : i + CHUNK] for i in range(0, len(STREAM), CHUNK)]


def decode_all(mod: ModuleType) -> int:
    d = mod.SSEDecoder()
    n = 0
    for c in CHUNKS:
        n += len(d.feed(c))
    return n


@pytest.mark.benchmark(group="sse")
def test_sse_openai_stream(benchmark, sse_impl: ModuleType) -> None:
    mod = sse_impl
    benchmark.extra_info["bytes"] = len(STREAM)
    benchmark.extra_info["chunks"] = len(CHUNKS)
    assert benchmark(decode_all, mod) == EVENTS + 1
