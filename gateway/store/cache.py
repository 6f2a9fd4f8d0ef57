"""Storage for the response cache (pipeline stage 3): an in-process LRU, or Redis.

``CacheStore`` is the small Protocol ``pipeline/cache.py`` needs, kept apart from
the rate limiter's ``StateBackend`` so each can change on its own:

* ``lookup(key, lock, token, lock_ms)`` -> ``(entry or None, held)``: one round
  trip that reads the entry and, on a miss, tries to take the fill lock
  (``lock_ms=0``: only look). ``held`` says the caller now holds the lock and
  should fill the entry; on Redis another replica may hold it instead.
* ``store(key, value, ttl_ms, lock, token)``: write with a TTL, release the lock.
* ``unlock(lock, token)``: release the lock after a failed fill.

Keys are built by the caller: ``gw:{tenant}:cache:<digest>`` and
``gw:{tenant}:lock:<digest>``; the ``{tenant}`` hash tag puts both in one Redis
Cluster slot, which the scripts need. Every Redis call is bounded by a short
timeout; any failure raises ``CacheUnavailable`` and opens a short cool-down in
which calls fail at once, so a slow or dead Redis costs one timeout, not one per
request. The caller then serves without the cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import NoScriptError, RedisError

from gateway.store import scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from gateway.store.autopipe import AutoPipeline

__all__ = ["BoundedRedis", "CacheStore", "CacheUnavailable", "MemoryCacheStore", "RedisCacheStore"]


class CacheUnavailable(Exception):
    """The cache's store did not answer in time (or at all); skip the cache."""


class CacheStore(Protocol):
    kind: str

    async def lookup(
        self,
        key: str,
        lock: str,
        token: str,
        lock_ms: int,
        queued: Callable[[], None] | None = None,
    ) -> tuple[bytes | None, bool]: ...

    async def store(self, key: str, value: bytes, ttl_ms: int, lock: str, token: str) -> None: ...

    async def unlock(self, lock: str, token: str) -> None: ...

    async def compact(self, key: str, read: bytes, value: bytes) -> None: ...


class MemoryCacheStore:
    """A bounded LRU with per-entry TTL, for one process (REDIS_URL unset).

    Bounded by entry count and by total bytes; the least recently used entries
    go first. Expired entries are dropped when they are met. There is no lock:
    within one process the caller's in-flight table already coalesces, so a
    lookup that asks for the lock always gets it.
    """

    kind = "memory"

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            del self._data[key]
            self.bytes -= len(value)
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        size = len(value)
        if size > self.max_bytes:
            return  # would evict everything else and still not fit
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= len(old[1])
        self._data[key] = (self._clock() + ttl_ms / 1000, value)
        self.bytes += size
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, evicted) = self._data.popitem(last=False)
            self.bytes -= len(evicted)

    def delete(self, key: str) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self.bytes -= len(item[1])
        return item[0] > self._clock()  # an expired entry was not there

    async def lookup(
        self,
        key: str,
        lock: str,
        token: str,
        lock_ms: int,
        queued: Callable[[], None] | None = None,  # no pipe here: never called
    ) -> tuple[bytes | None, bool]:
        value = self.get(key)
        return value, value is None and lock_ms > 0

    async def store(self, key: str, value: bytes, ttl_ms: int, lock: str, token: str) -> None:
        self.put(key, value, ttl_ms)

    async def unlock(self, lock: str, token: str) -> None:
        return None

    async def compact(self, key: str, read: bytes, value: bytes) -> None:
        """``value`` in place of ``read`` (kept TTL and LRU place), if still there."""
        item = self._data.get(key)
        if item is not None and item[1] == read and item[0] > self._clock():
            self._data[key] = (item[0], value)
            self.bytes += len(value) - len(read)


class BoundedRedis:
    """Redis calls bounded by ``timeout_s``; after any failure every call fails at once
    (``CacheUnavailable``) for ``cooldown_s``, so a slow or dead Redis costs one
    timeout, not one per request."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        timeout_s: float = 0.05,
        cooldown_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._open_until = 0.0

    @property
    def available(self) -> bool:
        """False during the cool-down after a failure."""
        return self._clock() >= self._open_until

    async def _bounded(self, call: Callable[[], Awaitable[Any]], timed: bool = False) -> Any:
        """``call()`` within ``timeout_s`` (``timed``: it keeps to it itself)."""
        if self._clock() < self._open_until:
            raise CacheUnavailable("redis failed recently; cooling down")
        try:
            if timed:
                return await call()
            async with asyncio.timeout(self.timeout_s):
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed()
            raise CacheUnavailable(type(exc).__name__) from None

    def failed(self) -> None:
        """A call failed: skip the cache for the cool-down."""
        self._open_until = self._clock() + self.cooldown_s


class RedisCacheStore(BoundedRedis):
    """The cache in Redis (standalone or Cluster) through three small Lua scripts.

    Scripts are registered once (redis-py's ``AsyncScript``: ``EVALSHA``, and on
    ``NOSCRIPT`` after a ``SCRIPT FLUSH`` or a restart it loads and retries).
    """

    kind = "redis"

    def __init__(
        self, client: Redis | RedisCluster, pipe: AutoPipeline | None = None, **bounds: Any
    ) -> None:
        super().__init__(client, **bounds)  # timeout_s, cooldown_s, clock
        handles = scripts.register(client, scripts.CACHE_SCRIPTS)
        self._lookup = handles["cache_lookup"]
        self._store = handles["cache_store"]
        self._unlock = handles["cache_unlock"]
        self._compact = handles["cache_compact"]
        self._pipe = pipe

    async def _call(
        self,
        script: Any,
        keys: list[str],
        args: list[Any],
        queued: Callable[[], None] | None = None,
    ) -> Any:
        pipe = self._pipe
        if pipe is None:
            return await self._bounded(lambda: script(keys=keys, args=args))

        async def piped() -> Any:
            reply = pipe.evalsha(script.sha, keys, args, self.timeout_s)
            if queued is not None:
                queued()
            try:  # the pipe times the call out: one timer per batch, not one per call
                return await reply
            except NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL caches it again
                async with asyncio.timeout(self.timeout_s):
                    return await self.client.eval(script.script, len(keys), *keys, *args)

        return await self._bounded(piped, timed=True)

    async def lookup(
        self,
        key: str,
        lock: str,
        token: str,
        lock_ms: int,
        queued: Callable[[], None] | None = None,
    ) -> tuple[bytes | None, bool]:
        """``queued``: called once the lookup is queued on the auto-pipeline and before
        it goes out, to queue a call behind it in the same write (the rate limiter's
        reservation: ``Limiter.reserve_on_miss``); never called without the pipe."""
        entry, held = await self._call(self._lookup, [key, lock], [token, lock_ms], queued)
        return entry, held == 1

    async def store(self, key: str, value: bytes, ttl_ms: int, lock: str, token: str) -> None:
        await self._call(self._store, [key, lock], [value, ttl_ms, token])

    def store_soon(
        self, key: str, value: bytes, ttl_ms: int, lock: str, token: str
    ) -> asyncio.Future[Any] | None:
        """``store``, queued on the auto-pipeline now (lazily: it goes out with the next
        call that is waited for): no task and no coroutine for a write nobody waits for.
        The future fails like the pipe's calls; a failure starts the cool-down, except
        ``NoScriptError`` (the caller then stores the slow way, which loads the script
        again). None (nothing queued): no pipe, or cooling down."""
        pipe = self._pipe
        if pipe is None or self._clock() < self._open_until:
            return None
        fut = pipe.evalsha(
            self._store.sha, [key, lock], [value, ttl_ms, token], self.timeout_s, lazy=True
        )
        fut.add_done_callback(self._stored)
        return fut

    def _stored(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None and not isinstance(exc, NoScriptError):
            self.failed()

    async def unlock(self, lock: str, token: str) -> None:
        await self._call(self._unlock, [lock], [token])

    async def compact(self, key: str, read: bytes, value: bytes) -> None:
        """``value`` in place of ``read``, keeping the entry's remaining TTL, if the entry
        still holds ``read`` (compared by SHA-1 in Redis: ``read`` is not sent back)."""
        digest = hashlib.sha1(read, usedforsecurity=False).hexdigest()
        await self._call(self._compact, [key], [value, digest])
