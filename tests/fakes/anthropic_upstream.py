"""A small Anthropic Messages API upstream for end-to-end tests.

Run it as ``python -m tests.fakes.anthropic_upstream --port N [--key test-key]``.

``POST /v1/messages`` (JSON or SSE), ``POST /v1/messages/count_tokens``, ``GET /v1/models``.
Every request must carry ``x-api-key: <key>`` (401 ``authentication_error`` otherwise)
and ``anthropic-version`` (400 otherwise); every request is recorded. Behaviour:

======================  ===================================================
``tools``, no result    one ``tool_use`` block (``TOOL_NAME``, ``TOOL_INPUT``)
                        after a short text; streamed as ``input_json_delta``
                        fragments of ``TOOL_JSON`` (the first one empty)
model ``*overloaded*``  529 ``overloaded_error`` with ``retry-after: 3``
model ``*stream-error*`` streams some text, then ``event: error`` (overloaded)
otherwise               ``Echo: <last user text>`` (streamed in pieces)
======================  ===================================================

Test-only endpoints: ``GET /_requests``, ``POST /_reset``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aiohttp import web

TOOL_NAME = "get_weather"
TOOL_INPUT = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}
TOOL_JSON = json.dumps(TOOL_INPUT)
TOOL_ID = "toolu_fake_01"
COUNT = 42
STATE = web.AppKey("state", dict)


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
    if body.get("tools") and "tool_result" not in json.dumps((body.get("messages") or [{}])[-1]):
        return [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": TOOL_ID, "name": TOOL_NAME, "input": TOOL_INPUT},
        ], "tool_use"
    return [{"type": "text", "text": "Echo: " + _last_user_text(body)}], "end_turn"


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


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
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
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
    await resp.write(_event("message_start", {"type": "message_start", "message": start}))
    await resp.write(_event("ping", {"type": "ping"}))
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            text = block["text"]
            pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
            deltas = [{"type": "text_delta", "text": p} for p in pieces]
        else:
            opening = {**block, "input": {}}
            pieces = ["", *[TOOL_JSON[i : i + 7] for i in range(0, len(TOOL_JSON), 7)]]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        await resp.write(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        for d in deltas:
            await resp.write(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": d},
                )
            )
        if "stream-error" in model:
            await resp.write(
                _event(
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                )
            )
            return resp
        await resp.write(
            _event("content_block_stop", {"type": "content_block_stop", "index": index})
        )
    await resp.write(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 12},
            },
        )
    )
    await resp.write(_event("message_stop", {"type": "message_stop"}))
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
    request.app[STATE]["requests"].append(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "json": body,
        }
    )
    if request.headers.get("x-api-key") != request.app[STATE]["key"]:
        return _error(401, "authentication_error", "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return _error(400, "invalid_request_error", "anthropic-version header is required")
    if request.method == "POST" and not isinstance(body, dict):
        return _error(400, "invalid_request_error", "body must be a JSON object")
    return await handler(request)


def make_app(key: str) -> web.Application:
    app = web.Application(middlewares=[record_and_auth])
    app[STATE] = {"requests": [], "key": key}
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/v1/models", models)
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
