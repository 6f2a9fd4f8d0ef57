"""A small Azure OpenAI upstream for end-to-end tests.

Run it as ``python -m tests.fakes.azure_upstream --port N [--key test-key]``.

Dated API: ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``
and ``.../embeddings`` (``api-version`` required). v1 API: ``POST /openai/v1/chat/completions``
and ``/openai/v1/embeddings`` with the deployment in ``model`` (no ``api-version``
needed). The key must come in ``api-key`` (401 otherwise). Streams start with
Azure's ``prompt_filter_results`` chunk (no choices) and carry a content-filter
annotation choice without ``delta`` after the finish chunk, as Azure sends them.
Behaviour: with ``tools``, one tool call (``TOOL_NAME``, ``TOOL_ARGUMENTS`` streamed in
fragments); otherwise ``Echo: <last user text>``. Every request is recorded; the
deployment a request reached is in the recorded ``deployment`` field.

Test-only endpoints: ``GET /_requests``, ``POST /_reset``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.fakes.scaffold import (
    DONE,
    STATE,
    described,
    encode_embedding,
    new_app,
    open_stream,
    pieces,
    serve,
    sse,
)
from tests.fakes.scaffold import float32_vector as vector

TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}'
TOOL_ID = "call_azure_0001"
_FILTER = {"hate": {"filtered": False, "severity": "safe"}}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return "".join(p.get("text", "") for p in c or [] if p.get("type") == "text")
    return ""


def _usage(body: dict[str, Any], out: int) -> dict[str, Any]:
    prompt = 7 + len(json.dumps(body.get("messages"))) // 50
    return {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _frame(obj: Any) -> bytes:
    return sse(obj, compact=True)


async def chat(request: web.Request) -> web.StreamResponse:
    body: dict[str, Any] = request["json"]
    deployment = _deployment(request)
    base = {
        "id": "chatcmpl-az1",
        "created": 1727000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_az",
    }
    tools = bool(body.get("tools"))
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if tools:
            message["tool_calls"] = [
                {
                    "id": TOOL_ID,
                    "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS},
                }
            ]
        else:
            message["content"] = f"Echo: {_text(body)}"
        return web.json_response(
            {
                **base,
                "object": "chat.completion",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER}],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if tools else "stop",
                        "logprobs": None,
                        "content_filter_results": _FILTER,
                    }
                ],
                "usage": _usage(body, 6),
                "deployment": deployment,
            }
        )
    base["object"] = "chat.completion.chunk"
    resp = await open_stream(request)
    await resp.write(
        _frame(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER}],
            }
        )
    )

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {
            "index": 0,
            "delta": delta,
            "finish_reason": finish,
            "logprobs": None,
            "content_filter_results": _FILTER,
        }
        return _frame({**base, "choices": [choice], "usage": None})

    await resp.write(chunk({"role": "assistant", "content": ""}))
    if tools:
        start = {
            "index": 0,
            "id": TOOL_ID,
            "type": "function",
            "function": {"name": TOOL_NAME, "arguments": ""},
        }
        await resp.write(chunk({"tool_calls": [start]}))
        for piece in pieces(TOOL_ARGUMENTS, 6):
            fragment = {"index": 0, "function": {"arguments": piece}}
            await resp.write(chunk({"tool_calls": [fragment]}))
        await resp.write(chunk({}, "tool_calls"))
    else:
        for piece in pieces(f"Echo: {_text(body)}", 5):
            await resp.write(chunk({"content": piece}))
        await resp.write(chunk({}, "stop"))
    await resp.write(
        _frame(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "content_filter_offsets": {
                            "check_offset": 0,
                            "start_offset": 0,
                            "end_offset": 10,
                        },
                        "content_filter_results": _FILTER,
                    }
                ],
            }
        )
    )
    if (body.get("stream_options") or {}).get("include_usage"):
        await resp.write(_frame({**base, "choices": [], "usage": _usage(body, 6)}))
    await resp.write(DONE)
    return resp


async def embeddings(request: web.Request) -> web.Response:
    body: dict[str, Any] = request["json"]
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    dims = body.get("dimensions") or 4
    data = []
    for i, item in enumerate(items):
        emb = encode_embedding(vector(str(item), dims), body.get("encoding_format"))
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": len(items), "total_tokens": len(items)},
        }
    )


def _deployment(request: web.Request) -> Any:
    """The deployment a request reached: from the dated path, else the v1 body's model."""
    return request.match_info.get("deployment") or (request["json"] or {}).get("model")


def _describe(request: web.Request) -> dict[str, Any]:
    return described(request, query=dict(request.query), deployment=_deployment(request))


def _refuse(request: web.Request) -> web.Response | None:
    if request.headers.get("api-key") != request.app[STATE]["key"]:
        return _error(401, "401", "Access denied due to invalid subscription key.")
    if request.match_info.get("deployment") and not request.query.get("api-version"):
        return _error(404, "404", "Resource not found")
    if "/openai/v1/" in request.path and not _deployment(request):
        return _error(400, "BadRequest", "model is required")
    if not isinstance(request["json"], dict):
        return _error(400, "BadRequest", "body must be a JSON object")
    return None


def make_app(key: str) -> web.Application:
    app = new_app({"key": key}, describe=_describe, refuse=_refuse)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat)
    app.router.add_post("/openai/deployments/{deployment}/embeddings", embeddings)
    app.router.add_post("/openai/v1/chat/completions", chat)
    app.router.add_post("/openai/v1/embeddings", embeddings)
    return app


if __name__ == "__main__":
    serve(__doc__, make_app)
