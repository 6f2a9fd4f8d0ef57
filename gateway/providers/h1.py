"""The ``h1`` upstream transport: HTTP/1.1 of our own over ``asyncio.Protocol``.

aiohttp's client is most of what the bare pass-through itself spends per request
(bench/README.md, ``bare-raw``): its session, connector, request and response
objects are general-purpose machinery a proxy with a handful of fixed upstreams
does not need. This transport keeps what a gateway does need and nothing else:

- a keep-alive pool per upstream host (LIFO, so a hot connection stays hot), at most
  ``pool_size`` connections, idle ones closed after ``keepalive_timeout``; a
  request waits for a free slot at most its ``pool`` (else ``connect``) timeout;
- the request written as one block: request line, the precomputed header pairs
  (``transport.Post``), the body; a header value holding a line break is refused;
- the answer parsed by llhttp (``httptools``, the parser uvicorn and aiohttp build
  on): Content-Length, chunked with extensions and trailers, bodies ended by the
  connection's close, 1xx answers skipped, anything malformed or an upgrade an
  error; the status line and headers are bounded (``MAX_HEAD``), body bytes waiting
  for their reader pause the socket past ``HIGH_WATER``;
- timeouts as ``request.extensions["timeout"]`` says (``connect``, ``read``: the
  longest wait for the next bytes, like aiohttp's ``sock_read``; ``pool``);
- a connection goes back to the pool only when its answer ended cleanly, the upstream
  keeps it alive, the request was written out and nothing more arrived; a reused
  connection the upstream closed before answering a single byte (the keep-alive race)
  is retried once on a new one;
- gzip and deflate bodies decoded as they arrive (as the aiohttp transport does);
- every failure as httpx's exception types; TLS through ``ssl`` with the system's
  trust store (``verify``), ALPN ``http/1.1``.

No proxies, no HTTP/2, no redirects, no cookies: nothing of it applies to a
gateway's upstreams (the httpx transport is there for HTTP/2). ``HEAD`` is not
sent by the gateway and not supported here.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from typing import Any

import httpx

from gateway.deadline import deadline
from gateway.providers.h1_conn import HIGH_WATER, MAX_HEAD, MAX_HEADERS, Answer, Conn, Headers
from gateway.providers.transport import Post, _decoder

__all__ = ["HIGH_WATER", "MAX_HEAD", "MAX_HEADERS", "H1Response", "H1Transport", "Pool"]

_MAX_TARGETS = 1024  # URLs remembered per transport (a deployment has a few)


class Pool:
    """Keep-alive connections to one host and port."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        keepalive: float,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.limit = limit
        self.keepalive = keepalive
        self.loop = asyncio.get_running_loop()
        self.idle: list[Conn] = []
        self.count = 0  # connections open or being opened
        self.waiters: deque[asyncio.Future[Conn | None]] = deque()

    async def acquire(self, connect_timeout: float | None, pool_timeout: float | None) -> Conn:
        idle = self.idle
        while True:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                conn.idle = False
                if conn.closed:
                    continue
                if now - conn.idle_since > self.keepalive:
                    conn.close()
                    continue
                return conn
            if self.count < self.limit:
                break
            got = await self._wait(pool_timeout)
            if got is not None and not got.closed:
                return got
        self.count += 1
        try:
            return await self._connect(connect_timeout)
        except BaseException:
            self.count -= 1
            self._free_slot()
            raise

    async def _wait(self, seconds: float | None) -> Conn | None:
        """A connection handed over, or None: a slot is free (or was; try again)."""
        fut: asyncio.Future[Conn | None] = self.loop.create_future()
        self.waiters.append(fut)
        try:
            if seconds is None:
                return await fut
            with deadline(seconds):
                return await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                got = fut.result()  # handed over as we gave up: pass it on
                if got is not None:
                    self.release(got)
                else:
                    self._free_slot()
            else:
                fut.cancel()
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no upstream connection free in time") from None
            raise

    async def _connect(self, seconds: float | None) -> Conn:
        host = self.host
        opening = self.loop.create_connection(
            lambda: Conn(self),
            host,
            self.port,
            ssl=self.ssl,
            server_hostname=host if self.ssl is not None else None,
        )
        try:
            if seconds is None:
                _, conn = await opening
            else:
                with deadline(seconds):
                    _, conn = await opening
        except TimeoutError:
            raise httpx.ConnectTimeout("upstream connect timed out") from None
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"TLS handshake failed ({exc.reason or 'ssl'})") from None
        except OSError as exc:
            raise httpx.ConnectError(exc.strerror or "connection failed") from None
        return conn

    def release(self, conn: Conn) -> None:
        """A connection whose answer ended cleanly: to a waiting request, else idle."""
        conn.reused = True
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        now = self.loop.time()
        idle = self.idle
        if idle and now - idle[0].idle_since > self.keepalive:  # the oldest, gone stale
            old = idle.pop(0)
            old.idle = False
            old.close()
        conn.idle_since = now
        conn.idle = True
        idle.append(conn)

    def lost(self, conn: Conn) -> None:
        self.count -= 1
        if conn.idle:
            conn.idle = False
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        self._free_slot()

    def _free_slot(self) -> None:
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class _Stream(httpx.AsyncByteStream):
    """An answer's body as decoded bytes, chunk by chunk as they arrive."""

    __slots__ = ("_answer", "_decoder")

    def __init__(self, answer: Answer, decoder: Any) -> None:
        self._answer = answer
        self._decoder = decoder

    def __aiter__(self) -> _Stream:
        return self

    @property
    def ended(self) -> bool:
        """Every byte of the body has been handed out: the next read ends the stream."""
        answer = self._answer
        return self._decoder is None and answer.done and not answer.chunks

    async def __anext__(self) -> bytes:
        answer = self._answer
        decoder = self._decoder
        if decoder is None:
            data = await answer.next()
            if not data:
                raise StopAsyncIteration
            return data
        try:
            while True:
                data = await answer.next()
                if not data:
                    out: bytes = decoder.flush()
                    self._decoder = _ENDED
                    if not decoder.eof:
                        raise httpx.RemoteProtocolError("upstream ended the compressed body early")
                    if out:
                        return out
                    raise StopAsyncIteration
                out = decoder.decompress(data)
                if out:
                    return out
        except zlib.error as exc:
            answer.detach()
            raise httpx.RemoteProtocolError("upstream sent a body that does not decode") from exc

    async def aclose(self) -> None:
        answer = self._answer
        if not answer.done:
            answer.detach()  # a body we stopped reading must not go back to the pool


class _Ended:
    """A finished decoder: nothing more comes out."""

    eof = True

    def flush(self) -> bytes:
        return b""

    def decompress(self, data: bytes) -> bytes:
        return b""


_ENDED = _Ended()


class H1Response:
    """An answer as the relay reads it (``transport.UpstreamResponse``)."""

    __slots__ = ("headers", "status_code", "stream")

    def __init__(self, status: int, headers: Headers, stream: _Stream) -> None:
        self.status_code = status
        self.headers = headers
        self.stream = stream

    async def aread(self) -> bytes:
        stream = self.stream
        if stream._decoder is not None:
            return b"".join([chunk async for chunk in stream])
        answer = stream._answer
        parts = []
        while data := await answer.next():
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        await self.stream.aclose()


class H1Transport(httpx.AsyncBaseTransport):
    """An httpx transport speaking HTTP/1.1 itself (see the module's docstring)."""

    def __init__(
        self,
        *,
        pool_size: int = 256,
        keepalive_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._limit = pool_size
        self._keepalive = keepalive_timeout
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._pools: dict[tuple[str, str, int], Pool] = {}
        self._targets: dict[str, tuple[Pool, bytes]] = {}

    async def start(self) -> None:
        return None

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = self._ssl
        if ctx is None:
            verify = self._verify
            if isinstance(verify, ssl.SSLContext):
                ctx = verify
            else:
                ctx = ssl.create_default_context()
                if not verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return ctx

    def _target(self, text: str, url: httpx.URL) -> tuple[Pool, bytes]:
        """The pool for a URL and its request-target (path and query), once per URL."""
        hit = self._targets.get(text)
        if hit is None:
            scheme = url.scheme
            if scheme not in ("http", "https"):
                raise httpx.UnsupportedProtocol(f"cannot send to a {scheme[:10]!r} URL")
            host = url.host
            port = url.port or (443 if scheme == "https" else 80)
            key = (scheme, host, port)
            pool = self._pools.get(key)
            if pool is None:
                ctx = self._ssl_context() if scheme == "https" else None
                pool = self._pools[key] = Pool(host, port, ctx, self._limit, self._keepalive)
            if len(self._targets) >= _MAX_TARGETS:
                self._targets.clear()
            hit = self._targets[text] = (pool, url.raw_path or b"/")
        return hit

    async def send(self, request: httpx.Request) -> H1Response:
        """Send ``request``; its answer as the relay reads it."""
        if isinstance(request, Post):
            text, pairs = request.wire()
            content = request._content
        else:
            text, pairs = str(request.url), request.headers.multi_items()
            if "accept-encoding" not in request.headers:
                pairs.append(("accept-encoding", "gzip"))
            content = await request.aread()
        pool, path = self._target(text, request.url)
        block = _encode(request.method, path, pairs, content)
        ext = request.extensions.get("timeout")
        if ext:
            connect = ext.get("connect", self._connect_timeout)
            read = ext.get("read", self._read_timeout)
            waiting = ext.get("pool", connect)
        else:
            connect = waiting = self._connect_timeout
            read = self._read_timeout
        for attempt in (0, 1):
            conn = await pool.acquire(connect, waiting)
            reused = conn.reused
            answer = Answer(conn, read)
            conn.start(answer, block)
            try:
                while not answer.head:
                    if answer.error is not None:
                        raise answer.error
                    await answer.wait()
            except httpx.RemoteProtocolError:
                if attempt == 0 and reused and answer.got == 0:
                    continue  # the keep-alive race: closed before a byte came back
                raise
            except BaseException:
                answer.detach()
                raise
            break
        headers = Headers(answer.raw)
        decoder = None
        encoding = headers.get("content-encoding")
        if encoding and encoding != "identity":
            try:
                decoder = _decoder(encoding)
            except httpx.RemoteProtocolError:
                answer.detach()
                raise
            # the body callers read is decoded: its headers must not say otherwise
            headers = Headers(
                [p for p in answer.raw if p[0] not in ("content-encoding", "content-length")]
            )
        return H1Response(answer.status, headers, _Stream(answer, decoder))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport API (what ``send`` answers, as an ``httpx.Response``)."""
        r = await self.send(request)
        return httpx.Response(
            r.status_code,
            headers=r.headers.multi_items(),
            stream=r.stream,
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._targets.clear()
        await asyncio.sleep(0)


def _encode(method: str, path: bytes, pairs: list[tuple[str, str]], content: bytes) -> bytes:
    """The request as written: request line, headers, blank line, body."""
    lines = "".join([f"{k}: {v}\r\n" for k, v in pairs])
    try:
        head = f"{method} {path.decode('ascii')} HTTP/1.1\r\n{lines}\r\n".encode("latin-1")
    except UnicodeError:
        raise httpx.LocalProtocolError("a request header is not latin-1 text") from None
    lines_sent = len(pairs) + 2  # a bare CR or LF in a value would add to one count
    if head.count(b"\n") != lines_sent or head.count(b"\r") != lines_sent:
        raise httpx.LocalProtocolError("a request header holds a line break")
    return head + content
