"""An OpenAI-compatible upstream for the operations tests (tests/ops): keys that can be
rotated, compressed answers, and a record of what each request carried.

Run it as ``python -m tests.fakes.ops_upstream --port N --key K [--key K2 ...]``.

* **Keys.** A request without ``Authorization: Bearer <k>`` for an accepted ``k`` gets
  401. ``POST /_keys`` with a JSON list replaces the accepted keys (a provider revoking
  the old key after a rotation).
* **Compression.** A client that sends ``Accept-Encoding: gzip`` gets gzip: a whole
  answer compressed at once, a stream as one gzip stream flushed after every event
  (as a CDN compresses server-sent events).
* **Records.** ``GET /_requests``: each request's path, model, the key it used and
  its ``traceparent`` and ``accept-encoding`` headers; ``POST /_reset`` clears them.

Models (the body's ``model``): ``ops-echo`` (default) answers the last user message;
``ops-slow`` streams it in ``SLOW_CHUNKS`` events ``SLOW_GAP_S`` apart; ``ops-500`` and
``ops-429`` fail; ``ops-gzip`` streams like ``ops-slow``, gzipped whether asked or not
(a CDN that compresses anyway). ``/v1/embeddings`` answers ``DIMS``-dimension vectors (big JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
import zlib
from typing import Any

from aiohttp import web

SLOW_CHUNKS = 10
SLOW_GAP_S = 0.1
DIMS = 1536
STATE = web.AppKey("state", dict)


def _gzip_wanted(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "")


def _record(request: web.Request, body: dict[str, Any]) -> str | None:
    auth = request.headers.get("Authorization", "")
    key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
    request.app[STATE]["requests"].append(
        {
            "path": request.path,
            "model": body.get("model"),
            "key": key,
            "traceparent": request.headers.get("traceparent"),
            "accept_encoding": request.headers.get("Accept-Encoding"),
        }
    )
    return key


def _json(request: web.Request, obj: Any, status: int = 200, **headers: str) -> web.Response:
    data = json.dumps(obj).encode()
    if _gzip_wanted(request):
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def _error(request: web.Request, status: int, message: str, **headers: str) -> web.Response:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return _json(request, body, status, **headers)


def _user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return str(msg.get("content") or "")
    return ""


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-ops",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    key = _record(request, body)
    if key not in request.app[STATE]["keys"]:
        return _error(request, 401, "Incorrect API key provided")
    model = body.get("model", "ops-echo")
    if model == "ops-500":
        return _error(request, 500, "the upstream failed")
    if model == "ops-429":
        return _error(request, 429, "slow down", **{"Retry-After": "0"})
    text = _user_text(body)
    usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    if not body.get("stream"):
        answer = {
            "id": "chatcmpl-ops",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return _json(request, answer)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    gz = _gzip_wanted(request) or model == "ops-gzip"
    packer = zlib.compressobj(6, zlib.DEFLATED, 31) if gz else None
    if packer is not None:
        resp.headers["Content-Encoding"] = "gzip"
    await resp.prepare(request)
    slow = model in ("ops-slow", "ops-gzip")
    n = SLOW_CHUNKS if slow else 1
    size = max(1, -(-len(text) // n))
    events = [_chunk(model, {"role": "assistant", "content": ""})]
    events += [_chunk(model, {"content": text[i : i + size]}) for i in range(0, len(text), size)]
    events.append(_chunk(model, {}, "stop") | {"usage": usage})
    frames = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    for i, frame in enumerate(frames):
        if slow and i:
            await asyncio.sleep(SLOW_GAP_S)
        if packer is not None:
            frame = packer.compress(frame) + packer.flush(zlib.Z_SYNC_FLUSH)
        await resp.write(frame)
    if packer is not None:
        await resp.write(packer.flush())
    await resp.write_eof()
    return resp


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    key = _record(request, body)
    if key not in request.app[STATE]["keys"]:
        return _error(request, 401, "Incorrect API key provided")
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    data = [
        {"object": "embedding", "index": i, "embedding": [((i + k) % 97) / 97 for k in range(DIMS)]}
        for i in range(len(items))
    ]
    usage = {"prompt_tokens": 3, "total_tokens": 3}
    return _json(
        request, {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
    )


async def set_keys(request: web.Request) -> web.Response:
    request.app[STATE]["keys"] = set(await request.json())
    return web.json_response({"ok": True})


async def requests_(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE]["requests"])


async def reset(request: web.Request) -> web.Response:
    request.app[STATE]["requests"].clear()
    return web.json_response({"ok": True})


def make_app(keys: list[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = {"keys": set(keys), "requests": []}
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/_keys", set_keys)
    app.router.add_get("/_requests", requests_)
    app.router.add_post("/_reset", reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", action="append", default=[])
    args = parser.parse_args()
    web.run_app(make_app(args.key), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
