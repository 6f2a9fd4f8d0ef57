"""The h1 transport reading what upstreams send: framing (lengths, chunks, close-ended
bodies, 1xx), malformed and oversized heads, cuts, compression, and what it writes
(the request on the wire, header values refused), over raw loopback servers."""

from __future__ import annotations

import asyncio
import gzip

import httpx
import pytest

from gateway.providers import h1
from gateway.providers.h1 import H1Transport
from gateway.providers.transport import head, post
from tests.unit.h1_upstream import OK, Upstream, answering, fetch, read_request, run, send


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
