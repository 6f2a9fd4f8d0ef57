"""One upstream HTTP/1.1 connection of the h1 transport (``h1.py``): the
``asyncio.Protocol``, llhttp's callbacks (``httptools``), and the answer being read
off it. The pool and the transport in ``h1.py`` decide when a connection is opened,
reused or closed; this module keeps to the bytes of one exchange."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools
import httpx

from gateway.deadline import deadline

if TYPE_CHECKING:
    from gateway.providers.h1 import Pool

__all__ = ["HIGH_WATER", "MAX_HEAD", "MAX_HEADERS", "Answer", "Conn", "Headers"]

MAX_HEAD = 64 * 1024  # bytes of status line and headers an answer may send
MAX_HEADERS = 200  # header lines an answer may send
HIGH_WATER = 256 * 1024  # unread body bytes before the socket stops being read


class Headers(dict[str, str]):
    """An answer's headers: lower-case names, looked up case-insensitively; a repeated
    header's values joined with ", " (``raw`` keeps every pair as sent)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[str, str]]) -> None:
        super().__init__()
        self.raw = raw
        for k, v in raw:
            old = dict.get(self, k)
            dict.__setitem__(self, k, v if old is None else f"{old}, {v}")

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self.raw)


class Answer:
    """One answer being read off a connection: its head, then its body's bytes as
    they come (what the parser's callbacks and the reader share)."""

    __slots__ = (
        "chunked",
        "chunks",
        "conn",
        "done",
        "eof_ends",
        "error",
        "got",
        "head",
        "length",
        "loop",
        "raw",
        "read_timeout",
        "size",
        "status",
        "waiter",
    )

    def __init__(self, conn: Conn, read_timeout: float | None) -> None:
        self.conn: Conn | None = conn
        self.loop = conn.loop
        self.read_timeout = read_timeout
        self.status = 0
        self.raw: list[tuple[str, str]] = []
        self.head = False  # the status line and headers are in
        self.chunked = False
        self.length = False  # a Content-Length was sent
        self.eof_ends = False  # the body ends when the connection does
        self.got = 0  # bytes received, head included
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def fail(self, error: httpx.TransportError) -> None:
        if not self.done and self.error is None:
            self.error = error
            self.wake()

    async def wait(self) -> None:
        """Until the connection brings something (bytes, the end, an error)."""
        fut = self.waiter = self.loop.create_future()
        try:
            if self.read_timeout is None:
                await fut
            else:
                with deadline(self.read_timeout):
                    await fut
        except TimeoutError:
            self.detach()
            raise httpx.ReadTimeout("upstream read timed out") from None
        finally:
            self.waiter = None

    def detach(self) -> None:
        """Give the connection up unread: it is closed (it cannot serve another request)."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.close()

    async def next(self) -> bytes:
        """The body's next bytes (every byte received since the last call); b"" at its end."""
        while True:
            chunks = self.chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.size = 0
                conn = self.conn
                if conn is not None and conn.paused:
                    conn.resume()
                return data
            if self.error is not None:
                raise self.error
            if self.done:
                return b""
            await self.wait()


class Conn(asyncio.Protocol):
    """One upstream connection: the parser's callbacks feed the answer being read."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.answer: Answer | None = None
        self.closed = False
        self.idle = False  # in the pool's idle list
        self.reused = False  # has served an answer before
        self.idle_since = 0.0
        self.paused = False
        self._ended = False  # the current message ended in this feed
        self._keep = False  # ... and the upstream keeps the connection open
        self._info = False  # the current message is a 1xx, skipped
        self._head_bytes = 0

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        answer.got += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(httpx.RemoteProtocolError("upstream switched protocols"))
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, httpx.TransportError):
                self._broken(cause)
            else:
                self._broken(httpx.RemoteProtocolError("upstream sent malformed HTTP"))
            return
        except httptools.HttpParserError:
            self._broken(httpx.RemoteProtocolError("upstream sent malformed HTTP"))
            return
        if not answer.head:
            # every byte so far is head (llhttp holds a header it has not seen end)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._broken(httpx.RemoteProtocolError("upstream sent headers too large"))
            return
        if self._ended:
            self._ended = False
            self.answer = None
            if self.paused:
                self.resume()
            transport = self.transport
            if (
                self.closed
                or not self._keep
                or transport is None
                or transport.get_write_buffer_size()
            ):
                self.close()
            else:
                self.pool.release(self)

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # conn <-> parser and conn <-> transport are cycles: broken here, a closed
        # connection is freed at once rather than by the cyclic collector's next pass
        self.parser = None
        self.transport = None
        self.pool.lost(self)
        answer = self.answer
        if answer is None:
            return
        self.answer = None
        answer.conn = None
        if answer.done or answer.error is not None:
            return
        if answer.head and answer.eof_ends and exc is None:
            answer.done = True  # a body the upstream ends by closing: it is whole
            answer.wake()
        elif not answer.head:
            answer.fail(httpx.RemoteProtocolError("upstream closed the connection"))
        elif exc is not None:
            answer.fail(httpx.ReadError(type(exc).__name__))
        else:
            answer.fail(httpx.RemoteProtocolError("upstream ended the body early"))

    def pause_writing(self) -> None:  # a large request body: the transport buffers it
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        answer = self.answer
        if answer is None or answer.done:  # a second answer to one request
            raise httpx.RemoteProtocolError("upstream sent more than one answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        answer = self.answer
        assert answer is not None
        raw = answer.raw
        if len(raw) >= MAX_HEADERS:
            raise httpx.RemoteProtocolError("upstream sent too many headers")
        k = name.decode("latin-1").lower()
        v = value.decode("latin-1")
        raw.append((k, v))
        if k == "content-length":
            answer.length = True
        elif k == "transfer-encoding":
            answer.chunked = True

    def on_headers_complete(self) -> None:
        answer = self.answer
        assert answer is not None
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise httpx.RemoteProtocolError("upstream switched protocols")
            self._info = True  # 100 Continue, 103 Early Hints: the real answer follows
            answer.raw = []
            answer.chunked = answer.length = False
            return
        answer.status = status
        answer.head = True
        answer.eof_ends = not answer.chunked and not answer.length and status not in (204, 304)
        answer.wake()

    def on_body(self, data: bytes) -> None:
        answer = self.answer
        assert answer is not None
        answer.chunks.append(data)
        answer.size += len(data)
        if answer.size > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        answer.wake()

    def on_message_complete(self) -> None:
        if self._info:
            self._info = False
            self._head_bytes = 0
            return
        answer = self.answer
        assert answer is not None
        answer.done = True
        answer.conn = None
        self._ended = True
        self._keep = self.parser.should_keep_alive()  # llhttp forgets it once the feed ends
        answer.wake()

    # -- ours ----------------------------------------------------------------------

    def start(self, answer: Answer, data: bytes) -> None:
        """Send a request whose answer ``answer`` reads."""
        self.answer = answer
        self._head_bytes = 0
        self._info = False
        transport = self.transport
        assert transport is not None
        transport.write(data)

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _broken(self, error: httpx.TransportError) -> None:
        answer = self.answer
        self.answer = None
        if answer is not None:
            answer.conn = None
            answer.fail(error)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
