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

import asyncio
from typing import Any

from aiohttp import web

from tests.fakes.scaffold import DONE, headers_of, new_app, open_stream, serve, sse

ECHO_MARK = "upstream says: refused"
PASSWORD = "hunter2-url-password"
OTHER_KEY = "sk-live-OTHERKEY0123456789abcdef"
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


async def _stream(request: web.Request, first: bytes, error: bytes | None, rest: bytes) -> Any:
    resp = await open_stream(request)
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
        first = sse(_chunk(model, {"role": "assistant", "content": "hello"}))
        if model == "echo-stream":
            return await _stream(request, first, sse({"error": {"message": echo}}), b"")
        rest = sse({**_chunk(model, {}, "stop"), "usage": usage}) + DONE
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
            sse(
                {"type": "message_start", "message": {**message, "content": [], "usage": usage}},
                "message_start",
            )
            + sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
            + sse(
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
            return await _stream(request, first, sse(error, "error"), b"")
        rest = (
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 1},
                },
                "message_delta",
            )
            + sse({"type": "message_stop"}, "message_stop")
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
        first = sse({"candidates": [_candidate("hello", None)]})
        if model == "echo-stream":
            error = {"error": {"code": 500, "message": echo, "status": "INTERNAL"}}
            return await _stream(request, first, sse(error), b"")
        rest = sse({"candidates": [_candidate("", "STOP")], "usageMetadata": usage})
        return await _stream(request, first, None, rest)
    return web.json_response({"candidates": [_candidate("ok", "STOP")], "usageMetadata": usage})


# -- dispatch ---------------------------------------------------------------------------


async def any_post(request: web.Request) -> Any:
    body = request["json"] if isinstance(request["json"], dict) else {}
    path = request.path
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    if path.endswith("/chat/completions"):
        return await openai_chat(request, body, model or path.split("/")[-3])
    if path.endswith("/v1/messages"):
        return await anthropic_messages(request, body, model)
    if ":" in path:
        head, _, method = path.rpartition(":")
        return await gemini_call(request, head.rsplit("/", 1)[-1], method.startswith("stream"))
    return web.json_response({"error": {"message": "unknown path"}}, status=404)


def _describe(request: web.Request) -> dict[str, Any]:
    return {"path": request.path, "query": request.query_string, "headers": headers_of(request)}


def make_app(key: str = "") -> web.Application:
    """``key`` is ignored: this upstream checks none."""
    app = new_app({}, describe=_describe)
    app.router.add_post("/{tail:.*}", any_post)
    return app


if __name__ == "__main__":
    serve(__doc__, make_app, key_help="ignored: this upstream checks no key")
