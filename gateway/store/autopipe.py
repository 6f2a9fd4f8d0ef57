"""Script calls made in one turn of the event loop, sent to Redis as one write.

A request's hot-path Redis calls (cache lookup, reservation; after the answer, the
settle and the cache store) are each one ``EVALSHA``. Through redis-py's client each
costs ~60-70 µs of the worker's CPU (pool checkout, instrumentation, command
packing, a timeout context, parsing), about what the rest of the request costs. Here
calls queue while the loop runs; at the end of the turn one ``write`` sends them all
on one connection, and one reader task resolves their futures in order as the replies
arrive (Redis answers a connection's commands in the order sent). Under load a turn
holds many requests' calls and each costs ~15-20 µs; alone, a call is still one round
trip and no slower than before. Each script still runs atomically in Redis, so the
limits stay exact; what changes is only how the bytes travel (ioredis calls this
auto-pipelining).

The connection is redis-py's own (``pool.make_connection()``: the URL's host, port,
password, database and TLS, its hiredis parser when installed). Standalone Redis
only: a cluster routes each call by slot through redis-py's cluster client.

Failures: an error reply (``NOSCRIPT``, a script error) fails that call alone. A
dead or silent connection (no reply for ``read_timeout_s`` to ``2 x read_timeout_s``
while calls wait) fails every call in flight on it and is dropped; the next call
opens a new one. One watchdog timer per connection sees to that, not a timeout
around every reply read (``asyncio.timeout``, ~4 µs each, three per request).
A caller that stops waiting (its own timeout) leaves its reply to be read and
thrown away, so the replies after it still match their calls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection

__all__ = ["AutoPipeline", "pack", "pack_command"]

_Call = tuple["asyncio.Future[Any]", bytes]
LINGER_S = 0.002  # the longest a lazy call waits for a call to go out with


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings (ints as their decimal text)."""
    out = []
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data = arg
        elif kind is str:
            data = arg.encode()
        elif kind is int:
            data = b"%d" % arg
        elif isinstance(arg, (bytes, str, int)) and not isinstance(arg, bool):  # subclasses
            if isinstance(arg, bytes):
                data = bytes(arg)
            elif isinstance(arg, str):
                data = str.encode(arg)
            else:
                data = b"%d" % arg
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"*%d\r\n%b" % (len(out), b"".join(out))


# hiredis packs a command ~3x faster (C), to the same bytes for the str, int and bytes
# sent here; ``pack`` when it is missing (redis-py then parses replies in Python too).
try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency with wheels everywhere
    pack_command = pack  # type: ignore[assignment]


class AutoPipeline:
    def __init__(self, client: Redis, read_timeout_s: float = 1.0) -> None:
        self._pool = client.connection_pool
        self.read_timeout_s = read_timeout_s
        self._queued: list[_Call] = []
        self._flushing = False  # a flush is scheduled for the end of this turn
        self._linger: asyncio.TimerHandle | None = None  # the flush lazy calls wait for
        self._sent: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._conn: AbstractConnection | None = None
        self._opening: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._replies = 0  # replies read so far (the watchdog's sign of life)
        self._watchdog: asyncio.TimerHandle | None = None
        # The calls of this turn that wait at most t seconds, by t: one timer per group.
        self._expiry: dict[float, list[asyncio.Future[Any]]] = {}

    def evalsha(
        self,
        sha: str,
        keys: list[str],
        args: list[Any],
        timeout_s: float | None = None,
        *,
        lazy: bool = False,
    ) -> asyncio.Future[Any]:
        """``EVALSHA sha len(keys) *keys *args``; await the future for the reply.
        ``timeout_s``: the future fails with ``TimeoutError`` if no reply came by then
        (one timer for all the calls of a loop turn with the same timeout, where an
        ``asyncio.timeout`` per call would schedule and cancel one each).

        ``lazy``: a call nobody waits for on a client's path (a cache store, a refund)
        goes out with the next call that is waited for, or after ``LINGER_S``, whichever
        comes first, still in the order the calls were made. At low rates this saves a
        write, a read and a wake-up of the worker per request: the next request's
        lookup carries the last one's store, and their replies come back together."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            fut.set_exception(RedisConnectionError("closed"))
            return fut
        if lazy:
            if not self._flushing and self._linger is None:
                self._linger = loop.call_later(LINGER_S, self._lingered)
        elif not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)
        self._queued.append((fut, pack_command(("EVALSHA", sha, len(keys), *keys, *args))))
        if timeout_s is not None:
            expiry = self._expiry
            group = expiry.get(timeout_s)
            if group is None:
                if not expiry:  # the turn's first group: the next turn starts afresh
                    loop.call_soon(expiry.clear)
                group = expiry[timeout_s] = []
                loop.call_later(timeout_s, _expire, group)
            group.append(fut)
        return fut

    # -- writing ---------------------------------------------------------------------

    def _lingered(self) -> None:
        self._linger = None
        self._flush()

    def _flush(self) -> None:
        self._flushing = False
        if not self._queued:  # went out with an earlier flush
            return
        if self._opening is not None:  # calls queued while connecting go out after it
            return
        conn = self._conn
        if conn is None or not conn.is_connected:
            self._opening = asyncio.get_running_loop().create_task(self._open())
            return
        batch, self._queued = self._queued, []
        live = [(f, c) for f, c in batch if not f.done()]
        if not live:
            return
        try:
            conn._writer.write(b"".join(c for _, c in live))  # type: ignore[union-attr]
        except (OSError, RuntimeError, AttributeError) as exc:
            self._drop(exc)
            for fut, _ in live:
                _fail(fut, RedisConnectionError(f"write failed: {type(exc).__name__}"))
            return
        self._sent.extend(f for f, _ in live)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(conn))
        if self._watchdog is None:
            self._arm(conn)

    def _arm(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.read_timeout_s, self._check, conn, self._replies)

    def _check(self, conn: AbstractConnection, replies: int) -> None:
        """Every ``read_timeout_s`` while calls wait: no reply since the last look means
        the connection is dead or silent."""
        self._watchdog = None
        if conn is not self._conn or not self._sent:
            return  # dropped already, or nothing waits: the next flush re-arms
        if self._replies == replies:
            reader = self._reader
            self._drop(TimeoutError("no reply from redis in time"), conn)
            if reader is not None:
                reader.cancel()  # its read waits on a connection nobody uses any more
            return
        self._arm(conn)

    async def _open(self) -> None:
        conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
        # The handshake (AUTH, SELECT) is bounded by this; after it the watchdog
        # (``_check``) bounds the replies, and reads wait without a timeout of their own.
        conn.socket_timeout = self.read_timeout_s
        try:
            await conn.connect()
        except (RedisError, OSError, TimeoutError) as exc:
            self._opening = None
            batch, self._queued = self._queued, []
            for fut, _ in batch:
                _fail(fut, RedisConnectionError(f"connect failed: {type(exc).__name__}"))
            return
        conn.socket_timeout = None
        self._conn = conn
        self._opening = None
        if self._queued:
            self._flush()

    # -- reading ---------------------------------------------------------------------

    async def _read(self, conn: AbstractConnection) -> None:
        sent = self._sent
        while sent and conn is self._conn:
            try:
                reply: Any = await conn.read_response(disconnect_on_error=False)
            except RedisError as exc:
                if not isinstance(exc, ResponseError):
                    self._drop(exc, conn)
                    return
                reply = exc  # an error reply: that call's alone
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self._drop(exc, conn)
                return
            self._replies += 1
            fut = sent.popleft()
            if fut.done():  # its caller stopped waiting
                continue
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def _drop(self, exc: BaseException, conn: AbstractConnection | None = None) -> None:
        """The connection (``conn``, default the current one) is no use any more: fail
        what waits on it, forget it. A reader of a connection dropped earlier changes
        nothing: a newer connection may be in use by then."""
        if conn is not None and conn is not self._conn:
            return
        conn, self._conn = self._conn, None
        self._reader = None  # the next connection gets a reader of its own
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        sent, self._sent = self._sent, collections.deque()
        err = RedisConnectionError(f"connection lost: {type(exc).__name__}")
        for fut in sent:
            _fail(fut, err)
        if conn is not None:
            task = asyncio.get_running_loop().create_task(_disconnect(conn))
            task.add_done_callback(_discard)

    async def aclose(self) -> None:
        self._closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        for fut, _ in self._queued:
            _fail(fut, RedisConnectionError("closed"))
        self._queued = []
        if self._reader is not None and not self._reader.done():
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
        self._drop(RedisConnectionError("closed"))


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # retrieved: a caller that gave up must not log "never retrieved"


def _expire(group: list[asyncio.Future[Any]]) -> None:
    for fut in group:
        if not fut.done():  # answered ones are done; a caller that left cancelled its own
            fut.set_exception(TimeoutError("no reply from redis in time"))


def _discard(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _disconnect(conn: AbstractConnection) -> None:
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await conn.disconnect()
