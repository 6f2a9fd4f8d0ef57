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

import argparse
import base64
import hashlib
import json
import struct
from typing import Any

from aiohttp import web

TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}'
TOOL_ID = "call_azure_0001"
STATE = web.AppKey("state", dict)
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
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    body: dict[str, Any] = request["json"]
    deployment = request["deployment"]
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
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
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
        for i in range(0, len(TOOL_ARGUMENTS), 6):
            piece = {"index": 0, "function": {"arguments": TOOL_ARGUMENTS[i : i + 6]}}
            await resp.write(chunk({"tool_calls": [piece]}))
        await resp.write(chunk({}, "tool_calls"))
    else:
        text = f"Echo: {_text(body)}"
        for i in range(0, len(text), 5):
            await resp.write(chunk({"content": text[i : i + 5]}))
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
    await resp.write(b"data: [DONE]\n\n")
    return resp


def vector(text: str, dims: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [
        struct.unpack("<f", struct.pack("<f", (digest[i % 32] - 128) / 128))[0] for i in range(dims)
    ]


async def embeddings(request: web.Request) -> web.Response:
    body: dict[str, Any] = request["json"]
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    dims = body.get("dimensions") or 4
    data = []
    for i, item in enumerate(items):
        vec = vector(str(item), dims)
        emb: Any = vec
        if body.get("encoding_format") == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": len(items), "total_tokens": len(items)},
        }
    )


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE]["requests"])


async def reset(request: web.Request) -> web.Response:
    request.app[STATE]["requests"].clear()
    return web.json_response({"ok": True})


@web.middleware
async def record_and_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/_"):
        return await handler(request)
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    request["json"] = body
    dated = request.match_info.get("deployment")
    request["deployment"] = dated or (body or {}).get("model")
    request.app[STATE]["requests"].append(
        {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "json": body,
            "deployment": request["deployment"],
        }
    )
    if request.headers.get("api-key") != request.app[STATE]["key"]:
        return _error(401, "401", "Access denied due to invalid subscription key.")
    if dated and not request.query.get("api-version"):
        return _error(404, "404", "Resource not found")
    if "/openai/v1/" in request.path and not request["deployment"]:
        return _error(400, "BadRequest", "model is required")
    if not isinstance(body, dict):
        return _error(400, "BadRequest", "body must be a JSON object")
    return await handler(request)


def make_app(key: str) -> web.Application:
    app = web.Application(middlewares=[record_and_auth])
    app[STATE] = {"requests": [], "key": key}
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat)
    app.router.add_post("/openai/deployments/{deployment}/embeddings", embeddings)
    app.router.add_post("/openai/v1/chat/completions", chat)
    app.router.add_post("/openai/v1/embeddings", embeddings)
    app.router.add_get("/_requests", get_requests)
    app.router.add_post("/_reset", reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="test-key")
    args = parser.parse_args()
    web.run_app(make_app(args.key), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
