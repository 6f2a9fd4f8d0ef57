"""The h1 transport against upstreams that misbehave: raw loopback servers writing
exactly the bytes each test names (framing, 1xx, cuts, stalls, garbage, floods),
checking what comes out, which httpx error, and whether the connection is reused."""

from __future__ import annotations

import asyncio
import gc
import gzip
import ssl
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trustme

from gateway.providers import h1
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


def test_keep_alive_reuses_one_connection_and_sends_a_well_formed_request() -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(answering(OK)) as up:
            for _ in range(5):
                assert await fetch(t, up) == (
                    200,
                    {"content-type": "application/json", "content-length": "2"},
                    b"ok",
                )
            assert up.connections == 1

    run(main)


def test_the_request_on_the_wire() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        seen.append(await read_request(reader))
        writer.write(OK)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            url = up.url("/v1/x?api-version=2024-10-21")
            r = await t.send(post(url, head(url, [(b"X-Key", b"v")]), b'{"a":1}', {}))
            assert await r.aread() == b"ok"
            assert seen == [
                b"POST /v1/x?api-version=2024-10-21 HTTP/1.1\r\n"
                + f"host: 127.0.0.1:{up.port}\r\n".encode()
                + b"x-key: v\r\naccept-encoding: gzip\r\ncontent-length: 7\r\n\r\n"
                b'{"a":1}'
            ]

    run(main)


def test_headers_are_case_insensitive_and_repeats_are_joined() -> None:
    answer = (
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nX-A: 1\r\nx-a: 2\r\ncontent-length: 0\r\n\r\n"
    )

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer)) as up:
            r = await send(t, up)
            assert r.status_code == 429
            assert r.headers["RETRY-AFTER"] == "3" and r.headers.get("retry-after") == "3"
            assert "Retry-After" in r.headers and "nope" not in r.headers
            assert r.headers["x-a"] == "1, 2"
            assert await r.aread() == b""

    run(main)


def test_chunked_with_extensions_and_trailers() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n"
    )

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer)) as up:
            for _ in range(2):
                assert (await fetch(t, up))[2] == b"hello world"
            assert up.connections == 1

    run(main)


def test_a_stream_arrives_chunk_by_chunk() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(3):
            data = f"data: {i}\n\n".encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await read_request(reader)  # the connection is reused
        writer.write(OK)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            r = await send(t, up)
            got = [chunk async for chunk in r.stream]
            assert got == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
            await r.aclose()
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 1

    run(main)


def test_a_body_ended_by_the_close_is_whole_and_the_connection_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer, then_close=True)) as up:
            for _ in range(2):
                assert (await fetch(t, up))[2] == b"until the end"
            assert up.connections == 2

    run(main)


@pytest.mark.parametrize("info", [b"100 Continue", b"103 Early Hints\r\nlink: </a>; rel=preload"])
def test_informational_answers_are_skipped(info: bytes) -> None:
    answer = b"HTTP/1.1 " + info + b"\r\n\r\n" + OK

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer)) as up:
            for _ in range(2):
                status, headers, body = await fetch(t, up)
                assert (status, body) == (200, b"ok") and "link" not in headers
            assert up.connections == 1

    run(main)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2OO OK\r\ncontent-length: 2\r\n\r\nok",  # not a status
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS where HTTP was expected
    ],
)
def test_malformed_answers_are_protocol_errors_and_close_the_connection(answer: bytes) -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer, OK, by_connection=True)) as up:
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(t, up)
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_a_body_cut_short_is_an_error_not_a_short_answer() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer, then_close=True)) as up:
            r = await send(t, up)
            with pytest.raises(httpx.RemoteProtocolError, match="ended the body early"):
                await r.aread()

    run(main)


def test_a_chunked_stream_cut_mid_way_raises_after_its_chunks() -> None:
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n"

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer, then_close=True)) as up:
            r = await send(t, up)
            it = r.stream.__aiter__()
            assert await it.__anext__() == b"one"
            with pytest.raises(httpx.RemoteProtocolError):
                await it.__anext__()

    run(main)


def test_closed_before_answering_on_a_new_connection_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            with pytest.raises(httpx.RemoteProtocolError, match="closed the connection"):
                await fetch(t, up)
            assert up.connections == 1  # a fresh connection is not retried

    run(main)


def test_a_reused_connection_closed_before_answering_is_retried_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        if n == 0:
            await read_request(reader)  # the keep-alive race: read, then gone

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            assert (await fetch(t, up))[2] == b"ok"
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_an_idle_connection_the_upstream_closed_is_not_used() -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(answering(OK, then_close=True)) as up:
            # a keep-alive answer, then the upstream closes while the connection idles
            assert (await fetch(t, up))[2] == b"ok"
            await asyncio.sleep(0.05)
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_bytes_after_the_answer_close_the_connection() -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(
            answering(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad")
        ) as up:
            assert (await fetch(t, up))[2] == b"ok"
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_unsolicited_bytes_on_an_idle_connection_close_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad")
        await read_request(reader)
        writer.write(OK)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            assert (await fetch(t, up))[2] == b"ok"
            await asyncio.sleep(0.1)
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_headers_without_end_are_bounded() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: ")
        for _ in range(100):
            writer.write(b"a" * 8192)
            await writer.drain()

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            with pytest.raises(httpx.RemoteProtocolError, match="too large"):
                await fetch(t, up)

    run(main)


def test_too_many_headers() -> None:
    many = b"".join(b"x-%d: 1\r\n" % i for i in range(h1.MAX_HEADERS + 1))
    answer = b"HTTP/1.1 200 OK\r\n" + many + b"content-length: 0\r\n\r\n"

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer)) as up:
            with pytest.raises(httpx.RemoteProtocolError, match="too many headers"):
                await fetch(t, up)

    run(main)


def test_a_silent_upstream_is_a_read_timeout_and_its_connection_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 0:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
            await asyncio.sleep(5)
            return
        writer.write(OK)
        await asyncio.sleep(5)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            r = await send(t, up, limits={"connect": 1.0, "read": 0.2})
            it = r.stream.__aiter__()
            assert await it.__anext__() == b"one"
            with pytest.raises(httpx.ReadTimeout):
                await it.__anext__()
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_no_status_line_in_time_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            with pytest.raises(httpx.ReadTimeout):
                await fetch(t, up, limits={"connect": 1.0, "read": 0.2})

    run(main)


def test_refused_connection_is_a_connect_error() -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(answering(OK)) as up:
            url = up.url()
        await asyncio.sleep(0.01)
        with pytest.raises(httpx.ConnectError):
            await t.send(post(url, head(url, []), b"{}", {}))

    run(main)


def test_the_pool_limit_queues_then_times_out() -> None:
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            await gate.wait()
            writer.write(OK)
            await writer.drain()

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            first = asyncio.create_task(fetch(t, up))
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.PoolTimeout):
                await fetch(t, up, limits={"connect": 1.0, "read": 1.0, "pool": 0.1})
            second = asyncio.create_task(fetch(t, up))
            await asyncio.sleep(0.05)
            gate.set()
            assert (await first)[2] == (await second)[2] == b"ok"
            assert up.connections == 1

    run(main, pool_size=1)


def test_a_waiter_cancelled_leaves_the_pool_whole() -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(answering(OK)) as up:
            slow = [asyncio.create_task(fetch(t, up)) for _ in range(5)]
            slow[2].cancel()
            results = await asyncio.gather(*slow, return_exceptions=True)
            assert isinstance(results[2], asyncio.CancelledError)
            assert all(r[2] == b"ok" for i, r in enumerate(results) if i != 2)  # type: ignore[index]
            assert (await fetch(t, up))[2] == b"ok"
            pool = next(iter(t._pools.values()))
            assert pool.count == 1 and len(pool.idle) == 1 and not pool.waiters

    run(main, pool_size=1)


def test_a_body_left_unread_closes_its_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(answer if n == 0 else OK)
        await asyncio.sleep(5)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            r = await send(t, up)
            await r.aclose()  # mid-body: the rest must not be read as the next answer
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_cancelled_while_waiting_for_the_answer_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 0:
            await asyncio.sleep(0.2)
        writer.write(OK)
        await asyncio.sleep(1)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            task = asyncio.create_task(fetch(t, up))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_a_large_body_read_slowly_pauses_the_socket_and_arrives_whole() -> None:
    total = 4 * h1.HIGH_WATER
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total + b"x" * total

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer, OK)) as up:
            r = await send(t, up)
            await asyncio.sleep(0.1)  # the upstream writes it all; the reader is slow
            answer_ = r.stream._answer
            assert answer_.size <= h1.HIGH_WATER + 256 * 1024
            got = 0
            async for chunk in r.stream:
                got += len(chunk)
            assert got == total
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 1

    run(main)


def test_gzip_is_decoded_and_its_headers_dropped() -> None:
    data = gzip.compress(b"hello " * 1000)
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(data)
        + data
    )

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer)) as up:
            _, headers, body = await fetch(t, up)
            assert body == b"hello " * 1000
            assert "content-encoding" not in headers and "content-length" not in headers
            r = await send(t, up)
            assert b"".join([c async for c in r.stream]) == b"hello " * 1000

    run(main)


@pytest.mark.parametrize(
    ("encoding", "body", "match"),
    [
        (b"gzip", gzip.compress(b"hello" * 100)[:-12], "ended the compressed body early"),
        (b"gzip", b"not gzip at all", "does not decode"),
        (b"br", b"x", "unsupported content-encoding"),
    ],
)
def test_bad_compressed_bodies(encoding: bytes, body: bytes, match: str) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-encoding: %s\r\ncontent-length: %d\r\n\r\n"
        % (encoding, len(body))
        + body
    )

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer)) as up:
            with pytest.raises(httpx.RemoteProtocolError, match=match):
                await fetch(t, up)

    run(main)


@pytest.mark.parametrize("value", [b"a\r\nx-injected: 1", b"a\nb", b"a\rb"])
def test_a_header_value_with_a_line_break_is_refused_before_sending(value: bytes) -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(answering(OK)) as up:
            url = up.url()
            with pytest.raises(httpx.LocalProtocolError):
                await t.send(post(url, head(url, [(b"x-a", value)]), b"{}", {}))
            assert up.connections == 0

    run(main)


def test_an_http_1_0_answer_is_not_kept_alive() -> None:
    answer = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer)) as up:
            for _ in range(2):
                assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_connection_close_is_honoured() -> None:
    answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(answer)) as up:
            for _ in range(2):
                assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main)


def test_idle_connections_expire() -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(answering(OK)) as up:
            assert (await fetch(t, up))[2] == b"ok"
            await asyncio.sleep(0.15)
            assert (await fetch(t, up))[2] == b"ok"
            assert up.connections == 2

    run(main, keepalive_timeout=0.1)


def test_httpx_api_answers_an_httpx_response() -> None:
    async def main(t: H1Transport) -> None:
        async with Upstream(answering(OK)) as up, httpx.AsyncClient(transport=t) as client:
            r = await client.post(up.url(), json={"a": 1})
            assert (r.status_code, r.content) == (200, b"ok")
            assert r.headers["content-type"] == "application/json"

    run(main)


def test_split_at_every_byte() -> None:
    """The same answers written one byte at a time come out the same."""
    answers = [
        OK,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for answer in answers:
            await read_request(reader)
            for i in range(len(answer)):
                writer.write(answer[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)

    async def main(t: H1Transport) -> None:
        async with Upstream(handler) as up:
            got = [await fetch(t, up) for _ in answers]
            assert [(s, b) for s, _, b in got] == [(200, b"ok"), (201, b"abc"), (200, b"abc")]
            assert up.connections == 1

    run(main)


def _tls_upstream(ca: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize("verify", ["ca", "off", "system"])
def test_tls(verify: str) -> None:
    ca = trustme.CA()
    server_ctx, client_ctx = _tls_upstream(ca)

    async def main() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await read_request(reader)
                    writer.write(OK)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        chosen = {"ca": client_ctx, "off": False, "system": True}[verify]
        t = H1Transport(verify=chosen)
        url = httpx.URL(f"https://127.0.0.1:{port}/v1/chat/completions")
        try:
            for _ in range(2):
                request = post(url, head(url, [(b"authorization", b"Bearer k")]), b"{}", {})
                if verify == "system":  # a private CA: not trusted
                    with pytest.raises(httpx.ConnectError, match="TLS"):
                        await t.send(request)
                    continue
                r = await t.send(request)
                assert (r.status_code, await r.aread()) == (200, b"ok")
            pools = list(t._pools.values())
            assert len(pools) == 1 and pools[0].count == (0 if verify == "system" else 1)
        finally:
            await t.aclose()
            server.close()

    asyncio.run(main())


def test_a_closed_connection_is_freed_without_the_cyclic_collector() -> None:
    """The parser and the transport point back at the connection: those cycles are
    broken when it closes, so a server whose collections are rare does not pile them up."""

    async def main(t: H1Transport) -> None:
        async with Upstream(answering(OK, then_close=True)) as up:
            assert (await fetch(t, up))[2] == b"ok"
            pool = next(iter(t._pools.values()))
            ref = weakref.ref(pool.idle[-1])
            gc.disable()
            try:
                for _ in range(20):  # until the upstream's close has arrived
                    await asyncio.sleep(0.01)
                    if not pool.idle:
                        break
                await asyncio.sleep(0.01)
                assert ref() is None
            finally:
                gc.enable()

    run(main)
