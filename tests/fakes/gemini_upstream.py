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

import json
from typing import Any

from aiohttp import web

from tests.fakes.scaffold import STATE, described, new_app, open_stream, pieces, serve, sse
from tests.fakes.scaffold import float32_vector as vector

TOOL_NAME = "get_weather"
TOOL_ARGS = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}
SIGNATURE = "c2lnbmF0dXJlLWZha2U="


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
        resp = await open_stream(request)
        chunks: list[list[dict[str, Any]]] = []
        for p in _parts(body):
            if "text" in p:
                chunks.extend([[{"text": t}] for t in pieces(p["text"], 5)])
            else:
                chunks.append([p])
        for i, chunk in enumerate(chunks):
            event = _response(body, model, chunk, i == len(chunks) - 1)
            await resp.write(sse(event, eol="\r\n"))
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


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"models": [{"name": "models/gemini-fake"}]})


def _describe(request: web.Request) -> dict[str, Any]:
    return described(request, url=str(request.rel_url), query=dict(request.query))


def _refuse(request: web.Request) -> web.Response | None:
    if "key" in request.query:
        return _error(400, "INVALID_ARGUMENT", "keys are not accepted in URLs by this fake")
    if request.headers.get("x-goog-api-key") != request.app[STATE]["key"]:
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        return _error(400, "INVALID_ARGUMENT", "API key not valid.", [info])
    if request.method == "POST" and not isinstance(request["json"], dict):
        return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    return None


def make_app(key: str) -> web.Application:
    app = new_app({"key": key}, describe=_describe, refuse=_refuse)
    app.router.add_post("/v1beta/models/{call}", model_call)
    app.router.add_get("/v1beta/models", list_models)
    return app


if __name__ == "__main__":
    serve(__doc__, make_app)
