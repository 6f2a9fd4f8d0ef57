"""A small Gemini Developer API upstream for end-to-end tests.

Run it as ``python -m tests.fakes.gemini_upstream --port N [--key test-key]``.

Under ``/v1beta``: ``POST /models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` (CRLF-framed events, no terminator, as Gemini
sends them), ``:embedContent``, ``:batchEmbedContents``; ``GET /models``.
The key must come in ``x-goog-api-key`` (400 ``API_KEY_INVALID`` otherwise, as
Gemini answers); a ``key`` query parameter is refused with 400 so a key in a URL
can never pass unnoticed. Every request is recorded. Behaviour:

=======================  ==================================================
tools, and no function   one ``functionCall`` (``TOOL_NAME``, ``TOOL_ARGS``) after
response in the last     a short text; finishReason STOP
turn
model ``*429*``          429 RESOURCE_EXHAUSTED with RetryInfo ``retryDelay: 7s``
otherwise                ``Echo: <last user text>`` (streamed in pieces)
=======================  ==================================================

Test-only endpoints: ``GET /_requests``, ``POST /_reset``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
from typing import Any

from aiohttp import web

TOOL_NAME = "get_weather"
TOOL_ARGS = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}
SIGNATURE = "c2lnbmF0dXJlLWZha2U="
STATE = web.AppKey("state", dict)


def _error(
    status: int, gstatus: str, message: str, details: list[Any] | None = None
) -> web.Response:
    err = {"code": status, "message": message, "status": gstatus, "details": details or []}
    return web.json_response({"error": err}, status=status)


def _last_user_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    for c in reversed(body.get("contents") or []):
        if c.get("role", "user") == "user":
            return c.get("parts") or []
    return []


def _usage(body: dict[str, Any], out: int) -> dict[str, int]:
    prompt = 8 + len(json.dumps(body.get("contents"))) // 50
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": out,
        "thoughtsTokenCount": 3,
        "cachedContentTokenCount": 4,
        "totalTokenCount": prompt + out + 3,
    }


def _parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    last = _last_user_parts(body)
    if body.get("tools") and not any("functionResponse" in p for p in last):
        return [
            {"text": "Let me check. "},
            {"functionCall": {"name": TOOL_NAME, "args": TOOL_ARGS}, "thoughtSignature": SIGNATURE},
        ]
    text = "".join(p.get("text", "") for p in last)
    return [{"text": "Echo: " + text}]


def _response(body: dict[str, Any], model: str, parts: list[dict[str, Any]], finish: bool) -> dict:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = "STOP"
    return {
        "candidates": [cand],
        "usageMetadata": _usage(body, 9),
        "modelVersion": model,
        "responseId": "resp-fake-1",
    }


async def model_call(request: web.Request) -> web.StreamResponse:
    body: dict[str, Any] = request["json"]
    model, _, method = request.match_info["call"].partition(":")
    generate = method in ("generateContent", "streamGenerateContent")
    if generate and not isinstance(body.get("contents"), list):
        return _error(400, "INVALID_ARGUMENT", "contents is not specified")
    if "429" in model:
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
        return _error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", [retry])
    if method == "generateContent":
        return web.json_response(_response(body, model, _parts(body), True))
    if method == "streamGenerateContent":
        if request.query.get("alt") != "sse":
            return _error(400, "INVALID_ARGUMENT", "this fake streams only with alt=sse")
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        parts = _parts(body)
        chunks: list[list[dict[str, Any]]] = []
        for p in parts:
            if "text" in p:
                t = p["text"]
                chunks.extend([[{"text": t[i : i + 5]}] for i in range(0, len(t), 5)])
            else:
                chunks.append([p])
        for i, chunk in enumerate(chunks):
            event = _response(body, model, chunk, i == len(chunks) - 1)
            await resp.write(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
        return resp
    if method == "embedContent":
        dims = body.get("outputDimensionality") or 4
        text = body["content"]["parts"][0]["text"]
        return web.json_response({"embedding": {"values": vector(text, dims)}})
    if method == "batchEmbedContents":
        out = []
        for r in body.get("requests") or []:
            if r.get("model") != f"models/{model}":
                return _error(400, "INVALID_ARGUMENT", "model mismatch in batch request")
            dims = r.get("outputDimensionality") or 4
            out.append({"values": vector(r["content"]["parts"][0]["text"], dims)})
        return web.json_response({"embeddings": out})
    return _error(404, "NOT_FOUND", f"unknown method {method}")


def vector(text: str, dims: int) -> list[float]:
    """Deterministic, exactly representable in float32 (so base64 round-trips)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [
        struct.unpack("<f", struct.pack("<f", (digest[i % 32] - 128) / 128))[0] for i in range(dims)
    ]


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"models": [{"name": "models/gemini-fake"}]})


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
            "url": str(request.rel_url),
            "query": dict(request.query),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "json": body,
        }
    )
    if "key" in request.query:
        return _error(400, "INVALID_ARGUMENT", "keys are not accepted in URLs by this fake")
    if request.headers.get("x-goog-api-key") != request.app[STATE]["key"]:
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        return _error(400, "INVALID_ARGUMENT", "API key not valid.", [info])
    if request.method == "POST" and not isinstance(body, dict):
        return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    return await handler(request)


def make_app(key: str) -> web.Application:
    app = web.Application(middlewares=[record_and_auth])
    app[STATE] = {"requests": [], "key": key}
    app.router.add_post("/v1beta/models/{call}", model_call)
    app.router.add_get("/v1beta/models", list_models)
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
