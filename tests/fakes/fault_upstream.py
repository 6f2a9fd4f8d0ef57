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
``fault-429-oai-<R>-<T>``  429 with only OpenAI's reset headers: requests spent, reset in Go
                           duration R; tokens left, reset in T (``fault-429-oai-20s-6m0s``)
``fault-429-ant-<R>-<T>``  (``/v1/messages``) 429 in Anthropic's shape with only its reset
                           headers: requests spent, reset R seconds from now (RFC 3339);
                           tokens left, reset in T seconds
``fault-late-<S>-<N>ms``   waits N milliseconds, then status S (a slow failure)
``fault-hang``             accepts the request and never answers (until the client leaves)
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
``{"model": "fault-dyn-a", "as": "fault-503"}`` (``"as": null`` restores it): a
deployment that fails, then recovers on command. Unknown ``fault-*`` names behave
as ``fault-ok``.

Health checks: ``GET /v1/models/<model>`` answers as that model behaves now: its
status for ``fault-<status>`` and ``fault-late-<S>-...``, never for ``fault-hang``,
after X seconds for ``fault-stall-<X>s``, 200 otherwise; counted as ``probe:<model>``.
``POST /v1/messages`` (Anthropic) serves ``fault-429-ant-*`` and answers anything
else with a short Anthropic message.

Test endpoints: ``GET /_stats`` -> ``{model: {"count", "times", "gone"}}`` (requests
per model, their arrival times on this process's monotonic clock, and how many
of them the client closed before the answer ended), ``POST /_reset``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.scaffold import (
    DONE,
    STATE,
    behaviour,
    new_app,
    open_stream,
    openai_error,
    serve,
    sse,
    wait_or_gone,
)

WORDS = 5
TRICKLE_S = 1.0
HANG_S = 120.0  # a hanging answer gives up after this (the client has long gone)
_STATUSES = {400, 401, 403, 404, 429, 500, 502, 503, 504, 529}


def word(i: int) -> str:
    return f"w{i} "


def reply_text(n: int = WORDS) -> str:
    return "".join(word(i) for i in range(n))


def _error(status: int, message: str, code: str | None = None, type_: str | None = None) -> bytes:
    etype = type_ or ("invalid_request_error" if status < 500 else "server_error")
    return json.dumps(openai_error(message, etype, None, code)).encode()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return sse(obj, compact=True)


def _usage(n: int) -> dict[str, int]:
    return {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}


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
    if await wait_or_gone(request, seconds):
        return True
    stats.client_gone(model)
    return False


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
    b = behaviour(request, model, "x-fault", state["behave"])
    return await _behave(request, b, model, n, bool(body.get("stream")), stats)


def _json_error(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers or {}
    )


def _openai_resets(b: str) -> dict[str, str] | None:
    m = re.fullmatch(r"fault-429-oai-([0-9a-z.]+)-([0-9a-z.]+)", b)
    if not m:
        return None
    return {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": m.group(1),
        "x-ratelimit-limit-tokens": "40000",
        "x-ratelimit-remaining-tokens": "39000",
        "x-ratelimit-reset-tokens": m.group(2),
    }


def _rfc3339(seconds_from_now: float) -> str:
    at = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _anthropic_resets(b: str) -> dict[str, str] | None:
    m = re.fullmatch(r"fault-429-ant-([\d.]+)-([\d.]+)", b)
    if not m:
        return None
    requests, tokens = float(m.group(1)), float(m.group(2))
    return {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": _rfc3339(requests),
        "anthropic-ratelimit-tokens-limit": "80000",
        "anthropic-ratelimit-tokens-remaining": "79000",
        "anthropic-ratelimit-tokens-reset": _rfc3339(tokens),
        "anthropic-ratelimit-input-tokens-remaining": "40000",
        "anthropic-ratelimit-input-tokens-reset": _rfc3339(tokens),
        "anthropic-ratelimit-output-tokens-remaining": "39000",
        "anthropic-ratelimit-output-tokens-reset": _rfc3339(tokens),
        "request-id": "req_fault",
    }


async def _behave(
    request: web.Request, b: str, model: str, n: int, stream: bool, stats: Stats
) -> web.StreamResponse:
    if (resets := _openai_resets(b)) is not None:
        body = _error(429, "Rate limit reached for requests", "rate_limit_exceeded", "requests")
        return _json_error(429, body, resets)
    if b == "fault-hang":
        await _wait(request, HANG_S, stats, model)
        return web.Response(status=499)  # the client went away: nobody reads this
    if m := re.fullmatch(r"fault-late-(\d{3})-(\d+)ms", b):
        if not await _wait(request, int(m.group(2)) / 1000, stats, model):
            return web.Response(status=499)
        status = int(m.group(1))
        return _json_error(status, _error(status, f"fault {status}"))
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
    resp = await open_stream(request, **{"cache-control": "no-cache"})
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
        await resp.write(sse(obj))
        await resp.write(DONE)
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
    b = behaviour(request, model, "x-fault", state["behave"])
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


async def probe(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models/<model>``: a health check, answered as the model behaves now."""
    state = request.app[STATE]
    stats: Stats = state["stats"]
    model = request.match_info["model"]
    stats.hit(f"probe:{model}")
    b = state["behave"].get(model) or model
    if b == "fault-hang":
        await _wait(request, HANG_S, stats, f"probe:{model}")
        return web.Response(status=499)
    stall = re.fullmatch(r"fault-stall-([\d.]+)s", b)
    if stall and not await _wait(request, float(stall.group(1)), stats, f"probe:{model}"):
        return web.Response(status=499)
    m = re.fullmatch(r"fault-(\d{3})", b) or re.fullmatch(r"fault-late-(\d{3})-\d+ms", b)
    if m and int(m.group(1)) in _STATUSES:
        return _json_error(int(m.group(1)), _error(int(m.group(1)), "fault"))
    return web.json_response({"id": model, "object": "model", "created": 0, "owned_by": "fault"})


async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic's ``/v1/messages``: ``fault-429-ant-*``, else a short message."""
    state = request.app[STATE]
    body = await request.json()
    model = str(body.get("model", "fault-ok"))
    state["stats"].hit(model)
    b = state["behave"].get(model) or model
    if (resets := _anthropic_resets(b)) is not None:
        err = {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited"}}
        return _json_error(429, json.dumps(err).encode(), resets)
    return web.json_response(
        {
            "id": "msg_fault",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": reply_text()}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": WORDS},
        }
    )


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE]["stats"].as_json())


def _reset(state: dict[str, Any]) -> None:
    state["stats"] = Stats()
    state["behave"].clear()


async def behave(request: web.Request) -> web.Response:
    body = await request.json()
    table = request.app[STATE]["behave"]
    if body.get("as") is None:
        table.pop(body["model"], None)
    else:
        table[body["model"]] = body["as"]
    return web.json_response({"ok": True})


def make_app(key: str = "") -> web.Application:
    """``key`` is ignored: any bearer key is accepted."""
    app = new_app({"stats": Stats(), "behave": {}}, on_reset=_reset)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models/{model}", probe)
    app.router.add_get("/_stats", get_stats)
    app.router.add_post("/_behave", behave)
    return app


if __name__ == "__main__":
    serve(__doc__, make_app, key_help="ignored: any bearer key is accepted")
