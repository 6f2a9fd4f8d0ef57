"""Bare pass-through for bench/e2e.py: raw ASGI on Granian, one shared aiohttp.ClientSession.

Reads the request body and POSTs it to $BENCH_UPSTREAM_URL; a text/event-stream
answer is relayed chunk by chunk as the bytes arrive, anything else whole.
Run: ``granian --interface asgi --workers 1 --loop uvloop passthrough_aiohttp:app``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8081/v1/chat/completions")
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-key"}
session: aiohttp.ClientSession | None = None


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                session = aiohttp.ClientSession()  # default connector: limit 100, keep-alive
                await send({"type": "lifespan.startup.complete"})
            else:
                if session is not None:
                    await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if session is None:  # a server that skips lifespan
        session = aiohttp.ClientSession()
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    async with session.post(UPSTREAM, data=body, headers=HEADERS) as response:
        ctype = response.headers.get("content-type", "application/json").encode()
        if ctype.startswith(b"text/event-stream"):
            headers = [(b"content-type", ctype), (b"cache-control", b"no-cache")]
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            data = await response.read()
            headers = [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": data})
