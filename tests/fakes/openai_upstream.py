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
and recorded (method, path, headers, JSON body, body size). Test-only endpoints:
``GET /_requests``, ``POST /_reset``, ``GET /_streams`` (streams open now,
streams whose client went away, streams that ran to their end).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.scaffold import (
    DONE,
    STATE,
    behaviour,
    described,
    encode_embedding,
    new_app,
    open_stream,
    openai_error,
    pieces,
    serve,
    sse,
    wait_or_gone,
)

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
# Scenarios answered with an error before anything else: (status, body, headers).
CANNED: dict[str, tuple[int, dict[str, Any], dict[str, str] | None]] = {
    "fake-429": (
        429,
        openai_error(
            "Rate limit reached for fake-429 on requests per min",
            "requests",
            None,
            "rate_limit_exceeded",
        ),
        {"retry-after": "7", "x-ratelimit-remaining-requests": "0"},
    ),
    "fake-400": (
        400,
        openai_error(
            "Invalid value for 'temperature': too hot.",
            "invalid_request_error",
            "temperature",
            "invalid_value",
        ),
        None,
    ),
    "fake-500": (500, openai_error("The server had an error", "server_error"), None),
    "fake-401": (
        401,
        openai_error(
            "Incorrect API key provided: test-k**", "invalid_request_error", None, "invalid_api_key"
        ),
        None,
    ),
}


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
    return sse(obj, compact=True)


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
        events.append(openai_error("The upstream failed mid-burst", "server_error"))
        await resp.write(b"".join(_frame(e) for e in events))  # one write: one chunk
        return
    parts = pieces(_last_user_text(body), ECHO_PIECE)
    events = [role, *(_chunk(base, {"content": p}) for p in parts)]
    events.append(_chunk(base, {}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": _usage(body, len(parts))})
    for e in events:
        await resp.write(_multiline_frame(e))
    await resp.write(b"data: [DONE]\r\n\r\n")


class _Streams:
    def __init__(self) -> None:
        self.open = 0
        self.client_gone = 0
        self.completed = 0


async def _stream_chat(
    request: web.Request, body: dict[str, Any], scenario: str
) -> web.StreamResponse:
    streams: _Streams = request.app[STATE]["streams"]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = _base(body, "chat.completion.chunk")
    streams.open += 1
    finished = False
    try:
        resp = await open_stream(request, **{"cache-control": "no-cache"})
        if scenario in SPECIAL_STREAMS:
            await _stream_special(resp, body, scenario, base)
            await resp.write_eof()
            finished = True
            return resp
        await resp.write(_frame(_chunk(base, {"role": "assistant", "content": ""})))

        if scenario == "fake-hang-stream":
            await resp.write(_frame(_chunk(base, {"content": "wait"})))
            if not await wait_or_gone(request, HANG_S):
                streams.client_gone += 1
            return resp

        if scenario == "fake-stream-error":
            await resp.write(_frame(_chunk(base, {"content": "partial"})))
            await asyncio.sleep(0.01)
            error = openai_error(
                "The upstream model crashed mid-stream", "server_error", None, "fake_crash"
            )
            await resp.write(_frame(error))
            await resp.write_eof()
            finished = True
            return resp

        if scenario == "fake-tools":
            completion = 7
            call = {
                "index": 0,
                "id": TOOL_CALL_ID,
                "type": "function",
                "function": {"name": TOOL_NAME, "arguments": ""},
            }
            await resp.write(_frame(_chunk(base, {"tool_calls": [call]})))
            for piece in pieces(TOOL_ARGUMENTS, 7):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                await resp.write(_frame(_chunk(base, delta)))
            finish_reason = "tool_calls"
        else:
            parts = pieces(_last_user_text(body), ECHO_PIECE) or [""]
            completion = len(parts)
            for k, piece in enumerate(parts):
                if scenario == "fake-cut" and k == CUT_AFTER:
                    await asyncio.sleep(0.01)
                    # Drop the connection: no terminating chunk, no [DONE].
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                await resp.write(_frame(_chunk(base, {"content": piece})))
            finish_reason = "stop"

        await resp.write(_frame(_chunk(base, {}, finish_reason)))
        if include_usage:
            await resp.write(_frame({**base, "choices": [], "usage": _usage(body, completion)}))
        await resp.write(DONE)
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


def _not_an_object() -> web.Response:
    return web.json_response(
        openai_error("body must be a JSON object", "invalid_request_error"), status=400
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = request["json"]
    if not isinstance(body, dict):
        return _not_an_object()
    model = body.get("model")
    scenario = behaviour(
        request, model if isinstance(model, str) else "fake-echo", "x-fake-scenario"
    )
    if scenario in CANNED:
        status, error, headers = CANNED[scenario]
        return web.json_response(error, status=status, headers=headers)
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
        return _not_an_object()
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    dims = body.get("dimensions") or 8
    fmt = body.get("encoding_format") or "float"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": encode_embedding(embedding_vector(json.dumps(item), dims), fmt),
        }
        for i, item in enumerate(items)
    ]
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


async def get_streams(request: web.Request) -> web.Response:
    s: _Streams = request.app[STATE]["streams"]
    return web.json_response(
        {"open": s.open, "client_gone": s.client_gone, "completed": s.completed}
    )


def _describe(request: web.Request) -> dict[str, Any]:
    return described(request, raw_size=len(request["raw"]))


def _refuse(request: web.Request) -> web.Response | None:
    if request.headers.get("authorization") != "Bearer " + request.app[STATE]["key"]:
        return web.json_response(
            openai_error(
                "Incorrect API key provided.", "invalid_request_error", None, "invalid_api_key"
            ),
            status=401,
        )
    if request.method == "POST" and request["raw"] and request["json"] is None:
        return web.json_response(
            openai_error("We could not parse the JSON body", "invalid_request_error"), status=400
        )
    return None


def _reset_streams(state: dict[str, Any]) -> None:
    s: _Streams = state["streams"]
    s.client_gone = s.completed = 0


def make_app(key: str) -> web.Application:
    app = new_app(
        {"streams": _Streams(), "key": key},
        describe=_describe,
        refuse=_refuse,
        on_reset=_reset_streams,
    )
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/_streams", get_streams)
    return app


if __name__ == "__main__":
    serve(__doc__, make_app)
