"""The h1 transport's connections: reuse and the keep-alive race, bytes after an
answer, timeouts, the pool's limit and cancellation, unread bodies, slow readers, idle
expiry, TLS, and closed connections freed at once, over raw loopback servers."""

from __future__ import annotations

import asyncio
import gc
import ssl
import weakref
from typing import Any

import httpx
import pytest
import trustme

from gateway.providers import h1
from gateway.providers.h1 import H1Transport
from gateway.providers.transport import head, post
from tests.unit.h1_upstream import OK, Upstream, answering, fetch, read_request, run, send


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


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", id="http-1.0"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            id="connection-close",
        ),
    ],
)
def test_an_answer_that_ends_its_connection_is_not_kept_alive(answer: bytes) -> None:
    """An HTTP/1.0 answer, or one saying ``connection: close``: a new connection each."""

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
