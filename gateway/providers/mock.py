"""The ``mock`` provider: a real OpenAI-wire upstream that lives in-process.

It is an ``httpx`` transport, so requests to it take exactly the path a real
provider's take (adapter, relay, stream parser, metrics): useful for demos, for
load tests of the gateway itself, and for a newcomer with no API key. Answers
are deterministic for a given request: the same prompt gives the same words.
Latency before the first token and tokens per second come from the
deployment's ``mock`` options (config) and default to instant.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from gateway.config import MockOptions

_WORDS = [
    "the",
    "gateway",
    "answers",
    "quickly",
    "and",
    "counts",
    "every",
    "token",
    "it",
    "relays",
    "while",
    "the",
    "provider",
    "streams",
    "deterministic",
    "words",
    "back",
    "to",
    "a",
    "patient",
    "client",
    "who",
    "asked",
    "a",
    "question",
    "about",
    "latency",
    "budgets",
    "caches",
    "routes",
    "retries",
    "breakers",
    "and",
    "metrics",
]
_encode = msgspec.json.Encoder().encode
_DEFAULT = MockOptions()
MOCK_MODELS = ("mock-1", "mock-fast", "mock-embedding")


def _seed(obj: Any) -> int:
    return int.from_bytes(hashlib.blake2b(_encode(obj), digest_size=8).digest(), "little")


def reply_words(messages: Any, n: int) -> list[str]:
    """n deterministic words chosen by the conversation's digest."""
    seed = _seed(messages)
    out = []
    for i in range(n):
        seed = (seed * 6364136223846793005 + 1442695040888963407 + i) & 0xFFFFFFFFFFFFFFFF
        out.append(_WORDS[(seed >> 33) % len(_WORDS)])
    return out


def _prompt_tokens(body: dict[str, Any]) -> int:
    try:
        from gateway.tokencount import count_chat_tokens
    except ImportError:  # pragma: no cover - the tokens kernel ships with the package
        return max(1, len(_encode(body.get("messages", []))) // 4)
    return int(count_chat_tokens(body.get("messages") or [], str(body.get("model", "mock"))))


def _max_tokens(body: dict[str, Any], opts: MockOptions) -> int:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    n = opts.reply_tokens
    return min(n, limit) if isinstance(limit, int) and limit > 0 else n


class MockTransport(httpx.AsyncBaseTransport):
    """Answers ``/chat/completions``, ``/embeddings``, ``/models`` and ``/models/{id}``
    like OpenAI (every model exists)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        opts: MockOptions = request.extensions.get("mock") or _DEFAULT
        if request.method == "GET" and path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MOCK_MODELS
            ]
            return _json(200, {"object": "list", "data": data}, request)
        if request.method == "GET" and "/models/" in path:  # retrieve a model (health checks)
            model = {"id": path.rpartition("/models/")[2], "object": "model", "owned_by": "mock"}
            return _json(200, {**model, "created": 0}, request)
        try:
            body = msgspec.json.decode(request.content)
        except msgspec.DecodeError:
            return _json(400, _err("body is not JSON"), request)
        if not isinstance(body, dict):
            return _json(400, _err("body must be an object"), request)
        if opts.latency_ms:
            await asyncio.sleep(opts.latency_ms / 1000)
        if path.endswith("/chat/completions"):
            if body.get("stream"):
                return httpx.Response(
                    200,
                    headers=[(b"content-type", b"text/event-stream")],
                    stream=_MockStream(body, opts),
                    request=request,
                )
            return _json(200, _completion(body, opts), request)
        if path.endswith("/embeddings"):
            return _json(200, _embeddings(body), request)
        return _json(404, _err(f"no route {path}"), request)


def _json(status: int, obj: Any, request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        status,
        headers=[(b"content-type", b"application/json")],
        content=_encode(obj),
        request=request,
    )


def _err(message: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(body: dict[str, Any], opts: MockOptions) -> dict[str, Any]:
    n = _max_tokens(body, opts)
    words = reply_words(body.get("messages"), n)
    return {
        "id": f"chatcmpl-mock{_seed(body) % 10**12}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "mock-1"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if n < opts.reply_tokens else "stop",
            }
        ],
        "usage": _usage(_prompt_tokens(body), n),
    }


class _MockStream(httpx.AsyncByteStream):
    def __init__(self, body: dict[str, Any], opts: MockOptions) -> None:
        self._body = body
        self._opts = opts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body, opts = self._body, self._opts
        n = _max_tokens(body, opts)
        words = reply_words(body.get("messages"), n)
        base = {
            "id": f"chatcmpl-mock{_seed(body) % 10**12}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "mock-1"),
        }
        delay = 1.0 / opts.tokens_per_second if opts.tokens_per_second else 0.0
        first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        yield b"data: " + _encode(first) + b"\n\n"
        for i, w in enumerate(words):
            if delay:
                await asyncio.sleep(delay)
            piece = w if i == 0 else " " + w
            chunk = {
                **base,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            yield b"data: " + _encode(chunk) + b"\n\n"
        reason = "length" if n < opts.reply_tokens else "stop"
        yield (
            b"data: "
            + _encode({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
            + b"\n\n"
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": _usage(_prompt_tokens(body), n)}
            yield b"data: " + _encode(usage) + b"\n\n"
        yield b"data: [DONE]\n\n"


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    items = (
        inputs
        if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
        else [inputs]
    )
    dims = body.get("dimensions") or 8
    data = []
    for i, item in enumerate(items):
        seed = _seed(item)
        vec = [((seed >> (k % 56)) % 2000 - 1000) / 1000.0 for k in range(dims)]
        norm = sum(v * v for v in vec) ** 0.5 or 1.0
        vec = [v / norm for v in vec]
        emb: Any = vec
        if body.get("encoding_format") == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(max(1, len(str(x)) // 4) for x in items)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", "mock-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
