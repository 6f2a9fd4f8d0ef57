"""A fault-injecting OpenAI-compatible upstream for the resilience tests.

Run it as ``python -m tests.fakes.fault_upstream --port N``. Any bearer key is
accepted. The behaviour of each request is chosen by its ``model`` (the gateway
forwards no client headers, so the gateway's config maps aliases to these names),
or by an ``x-fault`` header when a test calls the fake directly:

=========================  ================================================================
``fault-ok``               answers; streamed as a role chunk, ``WORDS`` content chunks, a
                           finish chunk, usage and ``[DONE]``
``fault-<status>``         that status with an OpenAI error body: 400, 401, 403, 404, 429,
                           500, 502, 503, 504, 529
``fault-429-ra<N>``        429 with ``Retry-After: N``; ``fault-429-ms<N>``: ``retry-after-ms``
``fault-context``          400 ``context_length_exceeded`` (OpenAI's shape)
``fault-stall-<X>s``       waits X seconds before the status line, then answers
``fault-slow-<N>ms``       waits N milliseconds, then answers (latency for strategies)
``fault-stallbody-<X>s``   streams: the role chunk at once, the content after X seconds
``fault-cut-<k>``          streams k content chunks, then drops the connection; a whole
                           answer is cut half way through its body
``fault-trickle-<n>``      streams n content chunks one per ``TRICKLE_S`` seconds;
                           ``fault-trickle-<n>x<ms>ms``: one per ms milliseconds
``fault-badjson``          200 with a body (or a first stream event) that is not JSON
``fault-reset``            closes the connection without answering
``fault-flaky-<n>``        the first n requests (since the last reset) get a 503, then ok
=========================  ================================================================

A model can be given another behaviour at run time: ``POST /_behave`` with
``{"model": "fault-dyn-a", "as": "fault-503"}`` (``"as": null`` restores it).
Unknown ``fault-*`` names behave as ``fault-ok``.

Test endpoints: ``GET /_stats`` -> ``{model: {"count", "times", "gone"}}`` (requests
per model, their arrival times on this process's monotonic clock, and how many
of them the client closed before the answer ended), ``POST /_reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

from aiohttp import web

WORDS = 5
TRICKLE_S = 1.0
STATE = web.AppKey("state", dict)
_STATUSES = {400, 401, 403, 404, 429, 500, 502, 503, 504, 529}


def word(i: int) -> str:
    return f"w{i} "


def reply_text(n: int = WORDS) -> str:
    return "".join(word(i) for i in range(n))


def _error(status: int, message: str, code: str | None = None, type_: str | None = None) -> bytes:
    etype = type_ or ("invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return json.dumps(body).encode()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _usage(n: int) -> dict[str, int]:
    return {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}


def _gone(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


class Stats:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}
        self.gone: dict[str, int] = {}

    def hit(self, model: str) -> int:
        self.count[model] = self.count.get(model, 0) + 1
        self.times.setdefault(model, []).append(time.monotonic())
        return self.count[model]

    def client_gone(self, model: str) -> None:
        self.gone[model] = self.gone.get(model, 0) + 1

    def as_json(self) -> dict[str, Any]:
        return {
            m: {"count": n, "times": self.times.get(m, []), "gone": self.gone.get(m, 0)}
            for m, n in self.count.items()
        }


async def _wait(request: web.Request, seconds: float, stats: Stats, model: str) -> bool:
    """Sleep, watching the client; False if it went away (counted once)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _gone(request):
            stats.client_gone(model)
            return False
        await asyncio.sleep(min(0.02, max(0.0, end - time.monotonic())))
    return True


async def chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    stats: Stats = state["stats"]
    try:
        body = await request.json()
    except ValueError:
        return web.Response(
            status=400, body=_error(400, "not JSON"), content_type="application/json"
        )
    model = str(body.get("model", "fault-ok"))
    n = stats.hit(model)
    behaviour = request.headers.get("x-fault") or state["behave"].get(model) or model
    stream = bool(body.get("stream"))
    return await _behave(request, behaviour, model, n, stream, stats)


def _json_error(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers or {}
    )


async def _behave(
    request: web.Request, b: str, model: str, n: int, stream: bool, stats: Stats
) -> web.StreamResponse:
    if m := re.fullmatch(r"fault-429-ra(\d+)", b):
        return _json_error(
            429,
            _error(429, "Rate limit reached", "rate_limit_exceeded", "requests"),
            {"retry-after": m.group(1)},
        )
    if m := re.fullmatch(r"fault-429-ms(\d+)", b):
        return _json_error(
            429,
            _error(429, "Rate limit reached", "rate_limit_exceeded", "requests"),
            {"retry-after-ms": m.group(1)},
        )
    if m := re.fullmatch(r"fault-(\d{3})", b):
        status = int(m.group(1))
        if status in _STATUSES:
            code = "rate_limit_exceeded" if status == 429 else None
            return _json_error(status, _error(status, f"fault {status}", code))
    if b == "fault-context":
        return _json_error(
            400,
            _error(
                400,
                "This model's maximum context length is 8192 tokens. However, your messages "
                "resulted in 9000 tokens. Please reduce the length of the messages.",
                "context_length_exceeded",
            ),
        )
    if m := re.fullmatch(r"fault-flaky-(\d+)", b):
        if n <= int(m.group(1)):
            return _json_error(503, _error(503, "flaky: try again"))
        b = "fault-ok"
    if b == "fault-reset":
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=500)  # never written: the connection is gone
    delay = 0.0
    if m := re.fullmatch(r"fault-stall-([\d.]+)s", b):
        delay = float(m.group(1))
    elif m := re.fullmatch(r"fault-slow-(\d+)ms", b):
        delay = int(m.group(1)) / 1000
    if delay and not await _wait(request, delay, stats, model):
        return web.Response(status=499)  # the client went away: nobody reads this
    if b == "fault-badjson" and not stream:
        return web.Response(body=b"<html>not json</html>", content_type="application/json")
    if stream:
        return await _stream(request, b, model, stats)
    if m := re.fullmatch(r"fault-cut-(\d+)", b):
        resp = web.StreamResponse(status=200, headers={"content-type": "application/json"})
        resp.content_length = 400
        await resp.prepare(request)
        await resp.write(b'{"id": "chatcmpl-fault", "object": "chat.completion", "choi')
        await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.close()
        return resp
    out = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply_text(), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(WORDS),
    }
    return web.json_response(out)


async def _stream(request: web.Request, b: str, model: str, stats: Stats) -> web.StreamResponse:
    resp = web.StreamResponse(
        status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    await resp.prepare(request)
    try:
        if b == "fault-badjson":
            await resp.write(b"data: {this is not json\n\n")
            await resp.write_eof()
            return resp
        await resp.write(_chunk(model, {"role": "assistant", "content": ""}))
        stall = re.fullmatch(r"fault-stallbody-([\d.]+)s", b)
        if stall and not await _wait(request, float(stall.group(1)), stats, model):
            return resp
        cut = int(m.group(1)) if (m := re.fullmatch(r"fault-cut-(\d+)", b)) else None
        trickle, pace = None, TRICKLE_S
        if m := re.fullmatch(r"fault-trickle-(\d+)(?:x(\d+)ms)?", b):
            trickle = int(m.group(1))
            pace = int(m.group(2)) / 1000 if m.group(2) else TRICKLE_S
        count = trickle if trickle is not None else WORDS
        for i in range(count):
            if cut is not None and i == cut:
                await asyncio.sleep(0.01)
                assert request.transport is not None
                request.transport.close()  # no finish chunk, no [DONE]
                return resp
            if trickle is not None and i > 0 and not await _wait(request, pace, stats, model):
                return resp
            await resp.write(_chunk(model, {"content": word(i)}))
        await resp.write(_chunk(model, {}, "stop"))
        obj = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "model": model}
        obj.update(choices=[], usage=_usage(count))
        await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        stats.client_gone(model)
        raise
    return resp


async def embeddings(request: web.Request) -> web.StreamResponse:
    """Statuses and ``fault-flaky-<n>`` as for chat; anything else answers."""
    state = request.app[STATE]
    body = await request.json()
    model = str(body.get("model", "fault-ok"))
    n = state["stats"].hit(model)
    b = request.headers.get("x-fault") or state["behave"].get(model) or model
    if (m := re.fullmatch(r"fault-flaky-(\d+)", b)) and n <= int(m.group(1)):
        return _json_error(503, _error(503, "flaky: try again"))
    if (m := re.fullmatch(r"fault-(\d{3})", b)) and int(m.group(1)) in _STATUSES:
        return _json_error(int(m.group(1)), _error(int(m.group(1)), "fault"))
    return web.json_response(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.5, -0.5]}],
            "model": model,
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }
    )


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE]["stats"].as_json())


async def reset(request: web.Request) -> web.Response:
    request.app[STATE]["stats"] = Stats()
    request.app[STATE]["behave"].clear()
    return web.json_response({"ok": True})


async def behave(request: web.Request) -> web.Response:
    body = await request.json()
    table = request.app[STATE]["behave"]
    if body.get("as") is None:
        table.pop(body["model"], None)
    else:
        table[body["model"]] = body["as"]
    return web.json_response({"ok": True})


def make_app() -> web.Application:
    app = web.Application()
    app[STATE] = {"stats": Stats(), "behave": {}}
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/_stats", get_stats)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/_behave", behave)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
