"""A small, honest OpenAI-compatible upstream for end-to-end tests.

Run it as ``python -m tests.fakes.openai_upstream --port N [--key test-key]``.

Behaviour is chosen per request by the ``model`` name (or an ``x-fake-scenario``
header, which the gateway does not forward, so e2e tests use model names):

=================  ==========================================================
``fake-echo``      echoes the last user message (any unknown model does too)
``fake-tools``     answers with one tool call; streamed as OpenAI tool-call
                   deltas whose ``arguments`` are split across chunks
``fake-429``       429, ``Retry-After: 7``, OpenAI error body
``fake-400``       400, OpenAI error body with ``param``
``fake-500``       500, OpenAI error body
``fake-401``       401, as if the gateway's key were wrong
``fake-slow``      sleeps ``SLOW_S`` seconds before answering
``fake-cut``       streams ``CUT_AFTER`` content chunks, then drops the
                   connection (no terminating chunk, no ``[DONE]``)
``fake-bad-json``  200 with a body that is not JSON
``fake-stream-error``  streams one chunk, then ``data: {"error": {...}}``
``fake-hang-stream``   streams one chunk, then waits (up to ``HANG_S``) while
                   watching for the client to go away
``fake-multiline``     streams the echo, each event's JSON pretty-printed over
                   several ``data:`` lines ending in CRLF (legal SSE: a client
                   joins them with a line feed)
``fake-burst-error``   one write, so one network chunk: the role chunk, the
                   ``BURST`` content chunks, then ``data: {"error": {...}}``
``fake-late-burst-error``  the role chunk and an ``EARLY`` content chunk, then
                   (after a pause) the ``fake-burst-error`` write without its role
``fake-preamble-error``  one write: the role chunk, then the error (no content)
=================  ==========================================================

Every request is checked for ``Authorization: Bearer <key>`` (401 otherwise)
and recorded (method, path, headers, JSON body). Test-only endpoints:
``GET /_requests``, ``POST /_reset``, ``GET /_streams`` (streams open now,
streams whose client went away, streams that ran to their end).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import time
from typing import Any

from aiohttp import web

SLOW_S = 3.0
HANG_S = 30.0
CUT_AFTER = 2
ECHO_PIECE = 5  # characters per streamed content chunk

MODELS = (
    "fake-echo",
    "fake-tools",
    "fake-429",
    "fake-400",
    "fake-500",
    "fake-401",
    "fake-slow",
    "fake-cut",
    "fake-bad-json",
    "fake-stream-error",
    "fake-hang-stream",
    "fake-multiline",
    "fake-burst-error",
    "fake-late-burst-error",
    "fake-preamble-error",
    "fake-embed",
)
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}'
TOOL_CALL_ID = "call_fake_0001"
BAD_JSON_BODY = b"<html>this is not json</html>"
BURST = ("burst one, ", "burst two")
EARLY = "early, "
SPECIAL_STREAMS = (
    "fake-multiline",
    "fake-burst-error",
    "fake-late-burst-error",
    "fake-preamble-error",
)

STATE = web.AppKey("state", dict)


def _error(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _scenario(request: web.Request, body: dict[str, Any] | None) -> str:
    header = request.headers.get("x-fake-scenario")
    if header:
        return header
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else "fake-echo"


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and p.get("text")
                )
    return ""


def _usage(body: dict[str, Any], completion: int) -> dict[str, int]:
    prompt = max(1, len(json.dumps(body.get("messages", []))) // 4)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _base(body: dict[str, Any], obj: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake0001",
        "object": obj,
        "created": int(time.time()),
        "model": body.get("model", "fake-echo"),
        "system_fingerprint": "fp_fake",
    }


def embedding_vector(text: str, dims: int) -> list[float]:
    """Deterministic, and exactly representable as float32 (so base64 round-trips)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[k % len(digest)] + k) % 256 / 256 - 0.5 for k in range(dims)]


def _frame(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _multiline_frame(obj: Any) -> bytes:
    """One event whose JSON spans several ``data:`` lines, as a pretty-printing proxy sends."""
    lines = json.dumps(obj, indent=2).encode().split(b"\n")
    return b"".join(b"data: " + line + b"\r\n" for line in lines) + b"\r\n"


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> Any:
    return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def _stream_special(
    resp: web.StreamResponse, body: dict[str, Any], scenario: str, base: dict[str, Any]
) -> None:
    """``fake-multiline`` and the ``*-error`` scenarios written at once."""
    role = _chunk(base, {"role": "assistant", "content": ""})
    if scenario.endswith("-error"):
        events = [role]
        if scenario == "fake-late-burst-error":
            await resp.write(_frame(role) + _frame(_chunk(base, {"content": EARLY})))
            await asyncio.sleep(0.05)
            events = []
        if scenario != "fake-preamble-error":
            events.extend(_chunk(base, {"content": p}) for p in BURST)
        events.append(_error("The upstream failed mid-burst", "server_error"))
        await resp.write(b"".join(_frame(e) for e in events))  # one write: one chunk
        return
    text = _last_user_text(body)
    pieces = [text[i : i + ECHO_PIECE] for i in range(0, len(text), ECHO_PIECE)]
    events = [role, *(_chunk(base, {"content": p}) for p in pieces)]
    events.append(_chunk(base, {}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": _usage(body, len(pieces))})
    for e in events:
        await resp.write(_multiline_frame(e))
    await resp.write(b"data: [DONE]\r\n\r\n")


class _Streams:
    def __init__(self) -> None:
        self.open = 0
        self.client_gone = 0
        self.completed = 0


async def _begin_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    await resp.prepare(request)
    return resp


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _stream_chat(
    request: web.Request, body: dict[str, Any], scenario: str
) -> web.StreamResponse:
    streams: _Streams = request.app[STATE]["streams"]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = _base(body, "chat.completion.chunk")
    streams.open += 1
    finished = False
    try:
        resp = await _begin_stream(request)
        if scenario in SPECIAL_STREAMS:
            await _stream_special(resp, body, scenario, base)
            await resp.write_eof()
            finished = True
            return resp
        role = {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
        await resp.write(_frame(role))

        if scenario == "fake-hang-stream":
            await resp.write(
                _frame(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": "wait"}, "finish_reason": None}
                        ],
                    }
                )
            )
            deadline = time.monotonic() + HANG_S
            while time.monotonic() < deadline:
                if _client_gone(request):
                    streams.client_gone += 1
                    return resp
                await asyncio.sleep(0.02)
            return resp

        if scenario == "fake-stream-error":
            await resp.write(
                _frame(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": "partial"}, "finish_reason": None}
                        ],
                    }
                )
            )
            await asyncio.sleep(0.01)
            await resp.write(
                _frame(
                    _error(
                        "The upstream model crashed mid-stream", "server_error", None, "fake_crash"
                    )
                )
            )
            await resp.write_eof()
            finished = True
            return resp

        if scenario == "fake-tools":
            completion = 7
            first = {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": TOOL_CALL_ID,
                                    "type": "function",
                                    "function": {"name": TOOL_NAME, "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
            await resp.write(_frame(first))
            args = TOOL_ARGUMENTS
            pieces = [args[i : i + 7] for i in range(0, len(args), 7)]
            for piece in pieces:
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                await resp.write(
                    _frame(
                        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    )
                )
            finish_reason = "tool_calls"
        else:
            text = _last_user_text(body)
            pieces = [text[i : i + ECHO_PIECE] for i in range(0, len(text), ECHO_PIECE)] or [""]
            completion = len(pieces)
            for k, piece in enumerate(pieces):
                if scenario == "fake-cut" and k == CUT_AFTER:
                    await asyncio.sleep(0.01)
                    # Drop the connection: no terminating chunk, no [DONE].
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                await resp.write(
                    _frame(
                        {
                            **base,
                            "choices": [
                                {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                            ],
                        }
                    )
                )
            finish_reason = "stop"

        await resp.write(
            _frame({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]})
        )
        if include_usage:
            await resp.write(_frame({**base, "choices": [], "usage": _usage(body, completion)}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        finished = True
        return resp
    except (ConnectionResetError, asyncio.CancelledError):
        streams.client_gone += 1
        raise
    finally:
        streams.open -= 1
        if finished:
            streams.completed += 1


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = request["json"]
    if not isinstance(body, dict):
        return web.json_response(
            _error("body must be a JSON object", "invalid_request_error"), status=400
        )
    scenario = _scenario(request, body)
    if scenario == "fake-429":
        return web.json_response(
            _error(
                "Rate limit reached for fake-429 on requests per min",
                "requests",
                None,
                "rate_limit_exceeded",
            ),
            status=429,
            headers={"retry-after": "7", "x-ratelimit-remaining-requests": "0"},
        )
    if scenario == "fake-400":
        return web.json_response(
            _error(
                "Invalid value for 'temperature': too hot.",
                "invalid_request_error",
                "temperature",
                "invalid_value",
            ),
            status=400,
        )
    if scenario == "fake-500":
        return web.json_response(_error("The server had an error", "server_error"), status=500)
    if scenario == "fake-401":
        return web.json_response(
            _error(
                "Incorrect API key provided: test-k**",
                "invalid_request_error",
                None,
                "invalid_api_key",
            ),
            status=401,
        )
    if scenario == "fake-bad-json":
        return web.Response(body=BAD_JSON_BODY, content_type="application/json")
    if scenario == "fake-slow":
        await asyncio.sleep(SLOW_S)
    if body.get("stream"):
        return await _stream_chat(request, body, scenario)

    message: dict[str, Any]
    if scenario == "fake-tools":
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS},
                }
            ],
            "refusal": None,
        }
        finish_reason, completion = "tool_calls", 7
    else:
        text = _last_user_text(body)
        message = {"role": "assistant", "content": text, "refusal": None}
        finish_reason, completion = "stop", max(1, len(text) // 4)
    out = {
        **_base(body, "chat.completion"),
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": _usage(body, completion),
    }
    return web.json_response(out)


async def embeddings(request: web.Request) -> web.Response:
    body = request["json"]
    if not isinstance(body, dict):
        return web.json_response(
            _error("body must be a JSON object", "invalid_request_error"), status=400
        )
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    dims = body.get("dimensions") or 8
    fmt = body.get("encoding_format") or "float"
    data = []
    for i, item in enumerate(items):
        vec = embedding_vector(json.dumps(item), dims)
        emb: Any = vec
        if fmt == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(max(1, len(str(x)) // 4) for x in items)
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": body.get("model", "fake-embed"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def models(request: web.Request) -> web.Response:
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in MODELS]
    return web.json_response({"object": "list", "data": data})


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE]["requests"])


async def reset(request: web.Request) -> web.Response:
    request.app[STATE]["requests"].clear()
    s: _Streams = request.app[STATE]["streams"]
    s.client_gone = s.completed = 0
    return web.json_response({"ok": True})


async def get_streams(request: web.Request) -> web.Response:
    s: _Streams = request.app[STATE]["streams"]
    return web.json_response(
        {"open": s.open, "client_gone": s.client_gone, "completed": s.completed}
    )


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
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "json": body,
            "raw_size": len(raw),
        }
    )
    expected = "Bearer " + request.app[STATE]["key"]
    if request.headers.get("authorization") != expected:
        return web.json_response(
            _error("Incorrect API key provided.", "invalid_request_error", None, "invalid_api_key"),
            status=401,
        )
    if request.method == "POST" and raw and body is None:
        return web.json_response(
            _error("We could not parse the JSON body", "invalid_request_error"), status=400
        )
    return await handler(request)


def make_app(key: str) -> web.Application:
    app = web.Application(middlewares=[record_and_auth])
    app[STATE] = {"requests": [], "streams": _Streams(), "key": key}
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/_requests", get_requests)
    app.router.add_post("/_reset", reset)
    app.router.add_get("/_streams", get_streams)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="test-key", help="the API key the fake accepts")
    args = parser.parse_args()
    web.run_app(make_app(args.key), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
