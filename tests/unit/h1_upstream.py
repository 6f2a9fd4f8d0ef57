"""Raw loopback upstreams for the h1 transport's tests: servers that write exactly the
bytes a test names, and the helpers that send through a transport and read the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from gateway.providers.h1 import H1Response, H1Transport
from gateway.providers.transport import head, post

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (Content-Length framed, as the transport sends)."""
    head_bytes = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head_bytes.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head_bytes + await reader.readexactly(length)


class Upstream:
    """A loopback server; ``handler(reader, writer, n)`` serves connection number n."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Upstream:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = self.connections
            self.connections += 1
            try:
                await self.handler(reader, writer, n)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    def url(self, path: str = "/v1/chat/completions") -> httpx.URL:
        return httpx.URL(f"http://127.0.0.1:{self.port}{path}")


def answering(*answers: bytes, then_close: bool = False, by_connection: bool = False) -> Handler:
    """Answer each request on a connection with the next of ``answers`` (cycling), or
    (``by_connection``) every request on connection n with ``answers[n]`` (the last
    for later connections)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        i = 0
        while True:
            await read_request(reader)
            if by_connection:
                writer.write(answers[min(n, len(answers) - 1)])
            else:
                writer.write(answers[i % len(answers)])
            await writer.drain()
            i += 1
            if then_close:
                return

    return handler


async def send(
    t: H1Transport, up: Upstream, body: bytes = b"{}", limits: dict[str, float] | None = None
) -> H1Response:
    url = up.url()
    ext = {"timeout": limits} if limits else {}
    return await t.send(post(url, head(url, [(b"authorization", b"Bearer k")]), body, ext))


async def fetch(t: H1Transport, up: Upstream, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    r = await send(t, up, **kw)
    try:
        return r.status_code, dict(r.headers), await r.aread()
    finally:
        await r.aclose()


def run(main: Callable[[H1Transport], Awaitable[None]], **kw: Any) -> None:
    async def go() -> None:
        t = H1Transport(**kw)
        try:
            await main(t)
        finally:
            await t.aclose()

    asyncio.run(go())
