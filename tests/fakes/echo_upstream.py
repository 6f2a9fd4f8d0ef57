"""An upstream that echoes the credentials it was sent, in every provider's wire format.

Run it as ``python -m tests.fakes.echo_upstream --port N``. It plays a misbehaving
provider (or a proxy in front of one) whose error texts repeat the request's
headers, to prove that the gateway never relays or logs its own keys. It checks no
key (``--key`` is accepted, like the other fakes take it, and ignored): it answers
whatever arrives, and records every request's path and headers (``GET /_requests``,
``POST /_reset``), to prove which credential reached it.

The wire format follows the path: ``.../chat/completions`` OpenAI and Azure,
``.../v1/messages`` Anthropic, ``...:generateContent`` and
``...:streamGenerateContent`` Gemini. Behaviour follows the model (the body's
``model``, else Gemini's path segment):

================  ===========================================================
``echo-400``      400 in the provider's error shape, the echo as its message
``echo-500``      500, likewise
``echo-stream``   a 200 stream: one content event, then (a moment later, in
                  its own network chunk) the provider's error event with the echo
anything else     a small valid answer (``ok``), streamed if asked
================  ===========================================================

The echo holds every request header as ``name: value``, the bare credential
value, a URL with a password (``PASSWORD``) and another key-shaped token
(``OTHER_KEY``), after the words ``ECHO_MARK``, which a scrubbed message keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import web

ECHO_MARK = "upstream says: refused"
PASSWORD = "hunter2-url-password"
OTHER_KEY = "sk-live-OTHERKEY0123456789abcdef"
STATE = web.AppKey("state", dict)
_CRED_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def echo_text(request: web.Request) -> str:
    headers = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
    return (
        f"{ECHO_MARK}. Request headers were {headers}. Credential seen: {_bare(request)}. "
        f"Retry at http://svc:{PASSWORD}@internal.example/v1 or with {OTHER_KEY}."
    )


def _bare(request: web.Request) -> str | None:
    for name in _CRED_HEADERS:
        value = request.headers.get(name)
        if value:
            return value.removeprefix("Bearer ")
    return None


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data) + "\n\n").encode()


async def _stream(request: web.Request, first: bytes, error: bytes | None, rest: bytes) -> Any:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(first)
    if error is not None:
        await asyncio.sleep(0.05)  # its own network chunk
        await resp.write(error)
    else:
        await resp.write(rest)
    await resp.write_eof()
    return resp


# -- OpenAI and Azure -------------------------------------------------------------------


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-echo",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def openai_chat(request: web.Request, body: dict[str, Any], model: str) -> Any:
    echo = echo_text(request)
    if model in ("echo-400", "echo-500"):
        error = {"message": echo, "type": "invalid_request_error", "param": _bare(request)}
        status = int(model[-3:])
        return web.json_response({"error": {**error, "code": "echoed"}}, status=status)
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    if body.get("stream"):
        first = _sse(_chunk(model, {"role": "assistant", "content": "hello"}))
        if model == "echo-stream":
            return await _stream(request, first, _sse({"error": {"message": echo}}), b"")
        rest = _sse({**_chunk(model, {}, "stop"), "usage": usage}) + b"data: [DONE]\n\n"
        return await _stream(request, first, None, rest)
    message = {"role": "assistant", "content": "ok"}
    return web.json_response(
        {
            "id": "chatcmpl-echo",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }
    )


# -- Anthropic --------------------------------------------------------------------------


async def anthropic_messages(request: web.Request, body: dict[str, Any], model: str) -> Any:
    echo = echo_text(request)
    if model in ("echo-400", "echo-500"):
        error = {"type": "invalid_request_error", "message": echo}
        return web.json_response({"type": "error", "error": error}, status=int(model[-3:]))
    usage = {"input_tokens": 1, "output_tokens": 1}
    message = {
        "id": "msg_echo",
        "type": "message",
        "role": "assistant",
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
    }
    if body.get("stream"):
        first = (
            _sse(
                {"type": "message_start", "message": {**message, "content": [], "usage": usage}},
                "message_start",
            )
            + _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
            + _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "hello"},
                },
                "content_block_delta",
            )
        )
        if model == "echo-stream":
            error = {"type": "error", "error": {"type": "api_error", "message": echo}}
            return await _stream(request, first, _sse(error, "error"), b"")
        rest = (
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 1},
                },
                "message_delta",
            )
            + _sse({"type": "message_stop"}, "message_stop")
        )
        return await _stream(request, first, None, rest)
    content = [{"type": "text", "text": "ok"}]
    return web.json_response(
        {**message, "content": content, "stop_reason": "end_turn", "usage": usage}
    )


# -- Gemini -----------------------------------------------------------------------------


def _candidate(text: str, finish: str | None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return cand


async def gemini_call(request: web.Request, model: str, stream: bool) -> Any:
    echo = echo_text(request)
    if model in ("echo-400", "echo-500"):
        status = int(model[-3:])
        kind = "INVALID_ARGUMENT" if status == 400 else "INTERNAL"
        return web.json_response(
            {"error": {"code": status, "message": echo, "status": kind}}, status=status
        )
    usage = {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}
    if stream:
        first = _sse({"candidates": [_candidate("hello", None)]})
        if model == "echo-stream":
            error = {"error": {"code": 500, "message": echo, "status": "INTERNAL"}}
            return await _stream(request, first, _sse(error), b"")
        rest = _sse({"candidates": [_candidate("", "STOP")], "usageMetadata": usage})
        return await _stream(request, first, None, rest)
    return web.json_response({"candidates": [_candidate("ok", "STOP")], "usageMetadata": usage})


# -- dispatch ---------------------------------------------------------------------------


async def any_post(request: web.Request) -> Any:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    path = request.path
    request.app[STATE]["requests"].append(
        {
            "path": path,
            "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
    )
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    if path.endswith("/chat/completions"):
        return await openai_chat(request, body, model or path.split("/")[-3])
    if path.endswith("/v1/messages"):
        return await anthropic_messages(request, body, model)
    if ":" in path:
        head, _, method = path.rpartition(":")
        return await gemini_call(request, head.rsplit("/", 1)[-1], method.startswith("stream"))
    return web.json_response({"error": {"message": "unknown path"}}, status=404)


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE]["requests"])


async def reset(request: web.Request) -> web.Response:
    request.app[STATE]["requests"].clear()
    return web.json_response({"ok": True})


def make_app() -> web.Application:
    app = web.Application()
    app[STATE] = {"requests": []}
    app.router.add_get("/_requests", get_requests)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/{tail:.*}", any_post)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", help="ignored: this upstream checks no key")
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
