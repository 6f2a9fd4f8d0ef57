"""A small Anthropic Messages API upstream for end-to-end tests.

Run it as ``python -m tests.fakes.anthropic_upstream --port N [--key test-key]``.

``POST /v1/messages`` (JSON or SSE), ``POST /v1/messages/count_tokens``, ``GET /v1/models``.
Every request must carry ``x-api-key: <key>`` (401 ``authentication_error`` otherwise)
and ``anthropic-version`` (400 otherwise); every request is recorded. Behaviour:

======================  ===================================================
request has ``tools``   one ``tool_use`` block (``TOOL_NAME``, ``TOOL_INPUT``)
                        after a short text; streamed as ``input_json_delta``
                        fragments of ``TOOL_JSON`` (the first one empty)
model ``*overloaded*``  529 ``overloaded_error`` with ``retry-after: 3``
model ``*stream-error*`` streams some text, then ``event: error`` (overloaded)
otherwise               ``Echo: <last user text>`` (streamed in pieces)
======================  ===================================================

Test-only endpoints: ``GET /_requests``, ``POST /_reset``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.fakes.scaffold import STATE, described, new_app, open_stream, pieces, serve, sse

TOOL_NAME = "get_weather"
TOOL_INPUT = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}
TOOL_JSON = json.dumps(TOOL_INPUT)
TOOL_ID = "toolu_fake_01"
COUNT = 42


def _error(status: int, etype: str, message: str, **headers: str) -> web.Response:
    body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_f"}
    return web.json_response(body, status=status, headers=headers or None)


def _last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content or [] if b.get("type") == "text"]
        if texts:
            return "".join(texts)
    return ""


def _usage(body: dict[str, Any], output: int) -> dict[str, int]:
    return {
        "input_tokens": 10 + len(json.dumps(body.get("messages"))) // 50,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
        "output_tokens": output,
    }


def _answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    if body.get("tools"):
        return [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": TOOL_ID, "name": TOOL_NAME, "input": TOOL_INPUT},
        ], "tool_use"
    return [{"type": "text", "text": "Echo: " + _last_user_text(body)}], "end_turn"


def _event(data: dict[str, Any]) -> bytes:
    """An SSE event named, as Anthropic names them, by its data's ``type``."""
    return sse(data, data["type"])


async def messages(request: web.Request) -> web.StreamResponse:
    body: dict[str, Any] = request["json"]
    model = str(body.get("model", ""))
    if not isinstance(body.get("max_tokens"), int) or not isinstance(body.get("messages"), list):
        return _error(400, "invalid_request_error", "max_tokens and messages are required")
    if "overloaded" in model:
        return _error(529, "overloaded_error", "Overloaded", **{"retry-after": "3"})
    blocks, stop = _answer(body)
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "msg_fake_01",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": _usage(body, 12),
            }
        )
    resp = await open_stream(request)
    start = {
        "id": "msg_fake_02",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**_usage(body, 1)},
    }
    await resp.write(_event({"type": "message_start", "message": start}))
    await resp.write(_event({"type": "ping"}))
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"], 4)]
        else:
            opening = {**block, "input": {}}
            fragments = ["", *pieces(TOOL_JSON, 7)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in fragments]
        await resp.write(
            _event({"type": "content_block_start", "index": index, "content_block": opening})
        )
        for d in deltas:
            await resp.write(_event({"type": "content_block_delta", "index": index, "delta": d}))
        if "stream-error" in model:
            await resp.write(
                _event(
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    }
                )
            )
            return resp
        await resp.write(_event({"type": "content_block_stop", "index": index}))
    await resp.write(
        _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 12},
            }
        )
    )
    await resp.write(_event({"type": "message_stop"}))
    return resp


async def count_tokens(request: web.Request) -> web.Response:
    body: dict[str, Any] = request["json"]
    if "max_tokens" in body or "stream" in body:
        return _error(400, "invalid_request_error", "count_tokens takes no max_tokens or stream")
    return web.json_response({"input_tokens": COUNT})


async def models(request: web.Request) -> web.Response:
    data = [
        {
            "type": "model",
            "id": "claude-fake",
            "display_name": "Claude Fake",
            "created_at": "2025-01-01T00:00:00Z",
        }
    ]
    return web.json_response(
        {"data": data, "has_more": False, "first_id": "claude-fake", "last_id": "claude-fake"}
    )


def _describe(request: web.Request) -> dict[str, Any]:
    return described(request, query=request.query_string)


def _refuse(request: web.Request) -> web.Response | None:
    if request.headers.get("x-api-key") != request.app[STATE]["key"]:
        return _error(401, "authentication_error", "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return _error(400, "invalid_request_error", "anthropic-version header is required")
    if request.method == "POST" and not isinstance(request["json"], dict):
        return _error(400, "invalid_request_error", "body must be a JSON object")
    return None


def make_app(key: str) -> web.Application:
    app = new_app({"key": key}, describe=_describe, refuse=_refuse)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/v1/models", models)
    return app


if __name__ == "__main__":
    serve(__doc__, make_app)
