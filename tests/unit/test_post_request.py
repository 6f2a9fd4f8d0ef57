"""``transport.Post``: the cheap POST is the same request on the wire as httpx's own,
through every transport, before and after something reads or edits its headers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from gateway.providers.h1 import H1Transport
from gateway.providers.transport import (
    AiohttpTransport,
    Post,
    cached_head,
    head,
    post,
    set_header,
)

HEADERS = [
    (b"content-type", b"application/json"),
    (b"Accept", b"application/json, text/event-stream"),
    (b"authorization", b"Bearer sk-secret"),
]
BODY = b'{"model":"m","messages":[]}'


async def _echo_server() -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    """A raw HTTP/1.1 server that keeps each request's bytes and answers 200."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head_bytes = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = 0
            for line in head_bytes.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            seen.append(head_bytes + body)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, seen


def _parsed(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head_bytes, body = raw.split(b"\r\n\r\n", 1)
    line, *fields = head_bytes.split(b"\r\n")
    headers = {}
    for f in fields:
        k, v = f.split(b":", 1)
        headers[k.strip().lower()] = v.strip()
    return line, headers, body


async def _send(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> None:
    if isinstance(transport, AiohttpTransport | H1Transport):
        resp = await transport.send(request)
        assert await resp.aread() == b"ok"
        await resp.aclose()
    else:
        r = await transport.handle_async_request(request)
        await r.aread()
        await r.aclose()


@pytest.mark.parametrize("kind", ["h1", "aiohttp", "httpx"])
@pytest.mark.parametrize("edit", ["none", "set_header", "read_then_set", "read"])
def test_post_sends_what_httpx_request_sends(kind: str, edit: str) -> None:
    async def main() -> None:
        server, port, seen = await _echo_server()
        url = httpx.URL(f"http://127.0.0.1:{port}/v1/chat/completions?api-version=1")
        transports = {"h1": H1Transport, "aiohttp": AiohttpTransport}
        transport: httpx.AsyncBaseTransport = transports.get(
            kind, lambda: httpx.AsyncHTTPTransport(retries=0)
        )()
        try:
            cheap = post(url, head(url, HEADERS), BODY, {})
            plain = httpx.Request("POST", url, headers=HEADERS, content=BODY)
            for r in (cheap, plain):
                if edit == "read":
                    assert r.headers["authorization"] == "Bearer sk-secret"
                if edit == "read_then_set":
                    _ = r.headers["accept"]
                if edit in ("set_header", "read_then_set"):
                    set_header(r, "Accept-Encoding", "identity")
                    set_header(r, "traceparent", "00-01-02-01")
                await _send(transport, r)
            (l1, h1, b1), (l2, h2, b2) = (_parsed(x) for x in seen)
            assert l1 == l2 == b"POST /v1/chat/completions?api-version=1 HTTP/1.1"
            assert b1 == b2 == BODY
            for name in (b"host", b"content-type", b"accept", b"authorization", b"content-length"):
                assert h1[name] == h2[name], name
            if edit in ("set_header", "read_then_set"):
                assert h1[b"accept-encoding"] == b"identity"
                assert h1[b"traceparent"] == h2[b"traceparent"] == b"00-01-02-01"
        finally:
            await transport.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_post_reads_like_an_httpx_request() -> None:
    url = httpx.URL("https://api.example.com/v1/chat/completions")
    r = post(url, head(url, HEADERS), BODY, {"timeout": {"read": 5.0}})
    assert isinstance(r, httpx.Request) and isinstance(r, Post)
    assert r.method == "POST" and r.url == url
    assert r.content == BODY and r.read() == BODY
    assert r.extensions == {"timeout": {"read": 5.0}}
    assert r.headers["host"] == "api.example.com"
    assert r.headers["content-length"] == str(len(BODY))
    assert r.headers["accept"] == "application/json, text/event-stream"  # names fold
    set_header(r, "ACCEPT", "text/event-stream")  # one value, replaced
    assert r.headers.get_list("accept") == ["text/event-stream"]
    assert r.wire()[1].count(("accept", "text/event-stream")) == 1
    assert "sk-secret" not in repr(r)


def test_set_header_replaces_before_headers_exist() -> None:
    url = httpx.URL("http://127.0.0.1:1/x")
    r = post(url, head(url, HEADERS), BODY, {})
    set_header(r, "Authorization", "Bearer other")
    target, pairs = r.wire()
    assert target == "http://127.0.0.1:1/x"
    assert [v for k, v in pairs if k == "authorization"] == ["Bearer other"]
    assert r.headers["authorization"] == "Bearer other"  # made from the pairs


def test_cached_head_follows_a_new_prepare() -> None:
    url = httpx.URL("http://127.0.0.1:1/x")
    cache: dict[str, Any] = {"chat_url": url, "headers": HEADERS}
    first = cached_head(cache, "chat_url")
    assert cached_head(cache, "chat_url") is first
    # a reload's prepare puts new headers (a rotated key) and URLs in the cache
    cache["headers"] = [(b"authorization", b"Bearer rotated")]
    assert ("authorization", "Bearer rotated") in cached_head(cache, "chat_url")[1]
    cache["chat_url"] = httpx.URL("http://127.0.0.1:2/y")
    assert cached_head(cache, "chat_url")[0] == "http://127.0.0.1:2/y"
