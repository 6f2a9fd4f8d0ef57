"""Bare pass-through for bench/e2e.py over a minimal HTTP/1.1 client: what aiohttp's
client costs the ceiling.

Raw ASGI on Granian like passthrough_aiohttp.py, but each request goes out on a
keep-alive connection of its own small pool (``asyncio.Protocol``), written as one
precomputed header block plus the body, and the answer is read by hand:
Content-Length, or chunked (relayed chunk by chunk). No timeouts, no redirects, no
compression, no TLS, no error mapping: a measurement of the client's share of the
bare row (target ``bare-raw``, opt-in via ``--only``), not a pass-through to deploy.
Run: ``granian --interface asgi --workers 1 --loop uvloop passthrough_raw:app``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_URL = urlsplit(os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8081/v1/chat/completions"))
HOST, PORT = _URL.hostname or "127.0.0.1", _URL.port or 80
HEAD = (
    f"POST {_URL.path} HTTP/1.1\r\nhost: {HOST}:{PORT}\r\ncontent-type: application/json\r\n"
    "authorization: Bearer bench-key\r\ncontent-length: "
).encode()
_idle: list[_Conn] = []


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def more(self) -> None:
        """Wait for more bytes (ConnectionError once the upstream closed)."""
        if self.closed:
            raise ConnectionError("upstream closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        self._waiter = None

    async def until(self, n: int) -> None:
        while len(self.buf) < n:
            await self.more()


async def _connection() -> _Conn:
    while _idle:
        conn = _idle.pop()
        if not conn.closed:
            return conn
    _, conn = await asyncio.get_running_loop().create_connection(_Conn, HOST, PORT)
    return conn


async def _head(conn: _Conn) -> tuple[int, dict[bytes, bytes]]:
    while (end := conn.buf.find(b"\r\n\r\n")) < 0:
        await conn.more()
    lines = bytes(conn.buf[:end]).split(b"\r\n")
    del conn.buf[: end + 4]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(b" ", 2)[1]), headers


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    conn = await _connection()
    assert conn.transport is not None
    conn.transport.write(HEAD + str(len(body)).encode() + b"\r\n\r\n" + body)
    status, headers = await _head(conn)
    ctype = headers.get(b"content-type", b"application/json")
    keep = headers.get(b"connection", b"").lower() != b"close"
    if b"content-length" in headers:
        n = int(headers[b"content-length"])
        await conn.until(n)
        data = bytes(conn.buf[:n])
        del conn.buf[:n]
        if keep:
            _idle.append(conn)
        out = [(b"content-type", ctype), (b"content-length", str(n).encode())]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})
        return
    out = [(b"content-type", ctype), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": status, "headers": out})
    while True:  # chunked: size line, data, CRLF; a zero size ends it (no trailers here)
        while (eol := conn.buf.find(b"\r\n")) < 0:
            await conn.more()
        size = int(bytes(conn.buf[:eol]).split(b";")[0], 16)
        del conn.buf[: eol + 2]
        await conn.until(size + 2)
        chunk = bytes(conn.buf[:size])
        del conn.buf[: size + 2]
        if not size:
            break
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if keep:
        _idle.append(conn)
    await send({"type": "http.response.body", "body": b""})
