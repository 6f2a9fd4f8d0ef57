"""Bare pass-through for bench/e2e.py: raw ASGI on Granian, one shared default httpx client.

Reads the request body and POSTs it to $BENCH_UPSTREAM_URL; a text/event-stream
answer is relayed chunk by chunk as the bytes arrive, anything else whole.
Run: ``granian --interface asgi --workers 1 --loop uvloop passthrough_httpx:app``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8081/v1/chat/completions")
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-key"}


def make_app(new_client: Callable[[], httpx.AsyncClient]) -> Callable[..., Awaitable[None]]:
    client: httpx.AsyncClient | None = None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    client = new_client()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if client is not None:
                        await client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if client is None:  # a server that skips lifespan
            client = new_client()
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = client.build_request("POST", UPSTREAM, content=body, headers=HEADERS)
        response = await client.send(request, stream=True)
        try:
            ctype = response.headers.get("content-type", "application/json").encode()
            if ctype.startswith(b"text/event-stream"):
                headers = [(b"content-type", ctype), (b"cache-control", b"no-cache")]
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": headers,
                    }
                )
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                data = await response.aread()
                headers = [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": headers,
                    }
                )
                await send({"type": "http.response.body", "body": data})
        finally:
            await response.aclose()

    return app


app = make_app(httpx.AsyncClient)  # the default client: default transport, pool and limits
