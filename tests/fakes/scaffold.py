"""What every fake upstream shares, so each fake module holds only its provider's wire
format and behaviours.

* ``serve(doc, make_app)``: the command line every fake runs under
  (``python -m tests.fakes.<name> --port N [--host H] [--key K]``), serving the aiohttp
  app on loopback with no access log.
* ``new_app(state, ...)``: the app with its state under ``STATE``, and the test-only
  endpoints: ``GET /_requests`` (what the fake recorded, when it records) and
  ``POST /_reset``.
* ``recorder(describe, refuse)``: a middleware that reads each request's body once
  (``request["raw"]``, and ``request["json"]``: the decoded JSON or ``None``), appends
  ``describe(request)`` to ``state["requests"]``, then lets ``refuse(request)`` answer
  instead of the handler (a wrong key, a missing header, a body that is not JSON);
  ``described(request, **extra)`` is the usual record.
* ``behaviour(request, model, header)``: the model-name-driven dispatch: a test header
  (which the gateway never forwards) wins over a run-time override table, which wins
  over the model name.
* Streams: ``open_stream`` (an SSE response, prepared), ``sse`` (one event, framed as
  each provider frames them), ``DONE``; ``client_gone`` and ``wait_or_gone`` watch a
  client that leaves.
* Answers: ``openai_error`` (OpenAI's error envelope), ``pieces`` (text split as the
  fakes stream it), ``float32_vector`` and ``encode_embedding`` (deterministic
  embeddings that round-trip through base64).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

STATE = web.AppKey("state", dict)
DONE = b"data: [DONE]\n\n"

Describe = Callable[[web.Request], dict[str, Any]]
Refuse = Callable[[web.Request], web.StreamResponse | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- the process and the app ---------------------------------------------------------------


def serve(
    doc: str | None,
    make_app: Callable[[str], web.Application],
    key_help: str = "the API key the fake accepts",
) -> None:
    """Parse the fake's command line (described by its module's ``doc``) and serve
    ``make_app(key)`` until killed."""
    parser = argparse.ArgumentParser(description=(doc or "A fake upstream").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="test-key", help=key_help)
    args = parser.parse_args()
    web.run_app(make_app(args.key), host=args.host, port=args.port, print=None, access_log=None)


def new_app(
    state: dict[str, Any],
    *,
    describe: Describe | None = None,
    refuse: Refuse | None = None,
    on_reset: Callable[[dict[str, Any]], None] | None = None,
) -> web.Application:
    """An app holding ``state``; with ``describe`` it records every request (except the
    test-only ``/_*`` ones) and serves them at ``GET /_requests``. ``POST /_reset``
    forgets them and calls ``on_reset(state)``."""
    middlewares = [recorder(describe, refuse)] if describe is not None else []
    app = web.Application(middlewares=middlewares)
    app[STATE] = state
    if describe is not None:
        state["requests"] = []
        app.router.add_get("/_requests", _get_requests)

    async def reset(request: web.Request) -> web.Response:
        if describe is not None:
            state["requests"].clear()
        if on_reset is not None:
            on_reset(state)
        return web.json_response({"ok": True})

    app.router.add_post("/_reset", reset)
    return app


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE]["requests"])


def parse_json(raw: bytes) -> Any:
    """The JSON in ``raw``, or ``None`` when there is none or it is not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def recorder(describe: Describe, refuse: Refuse | None = None) -> Any:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_"):
            return await handler(request)
        request["raw"] = raw = await request.read()
        request["json"] = parse_json(raw)
        request.app[STATE]["requests"].append(describe(request))
        refused = refuse(request) if refuse is not None else None
        return refused if refused is not None else await handler(request)

    return record


def headers_of(request: web.Request) -> dict[str, str]:
    """The request's headers as recorded: lower-case names."""
    return {k.lower(): v for k, v in request.headers.items()}


def described(request: web.Request, **extra: Any) -> dict[str, Any]:
    """A recorded request: method, path, headers (``headers_of``), the JSON body, and
    whatever else the fake records about it."""
    return {
        "method": request.method,
        "path": request.path,
        "headers": headers_of(request),
        "json": request["json"],
        **extra,
    }


def behaviour(
    request: web.Request, model: str, header: str, overrides: dict[str, str] | None = None
) -> str:
    """What this request should do: the ``header`` a test sent the fake directly, else
    the run-time override for ``model``, else the model name itself."""
    return request.headers.get(header) or (overrides or {}).get(model) or model


# -- streams -------------------------------------------------------------------------------


async def open_stream(request: web.Request, **headers: str) -> web.StreamResponse:
    """A 200 ``text/event-stream`` response, prepared (its headers sent)."""
    resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream", **headers})
    await resp.prepare(request)
    return resp


def sse(data: Any, event: str | None = None, *, compact: bool = False, eol: str = "\n") -> bytes:
    """One event: an optional ``event:`` line, one ``data:`` line of JSON, a blank line.
    ``compact`` drops the spaces after separators (as OpenAI and Azure send them);
    ``eol`` is the line ending (Gemini ends its lines with CRLF)."""
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data)
    head = f"event: {event}{eol}" if event else ""
    return f"{head}data: {text}{eol}{eol}".encode()


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def wait_or_gone(request: web.Request, seconds: float) -> bool:
    """Sleep ``seconds`` while watching the client: False as soon as it has gone."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if client_gone(request):
            return False
        await asyncio.sleep(min(0.02, max(0.0, end - time.monotonic())))
    return True


# -- answers -------------------------------------------------------------------------------


def openai_error(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def pieces(text: str, size: int) -> list[str]:
    """``text`` in consecutive slices of ``size`` characters (none for empty text)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def float32_vector(text: str, dims: int) -> list[float]:
    """Deterministic, exactly representable in float32 (so base64 round-trips)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [
        struct.unpack("<f", struct.pack("<f", (digest[i % 32] - 128) / 128))[0] for i in range(dims)
    ]


def encode_embedding(vector: list[float], encoding_format: str | None) -> Any:
    """The vector as OpenAI sends it: a list of floats, or little-endian float32 in base64."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
