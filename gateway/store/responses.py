"""Storage for ``/v1/responses`` conversation state: an in-process LRU, or Redis.

``ResponseStore`` is the small Protocol ``pipeline/conversation.py`` needs (the
state backend hands one out: ``StateBackend.response_store``):

* ``get(key)`` -> the stored record, or None;
* ``put(key, value, ttl_ms)``: write with a TTL;
* ``delete(key)`` -> whether something was deleted.

Keys are built by the caller, ``gw:{<tenant tag>}:resp:<response id>``: one
tenant's responses share a Redis Cluster slot, and a tenant's tag is its id or a
digest of it, never a caller's key. A record is one key, written and deleted
whole, so plain ``SET PX`` / ``GET`` / ``DEL`` are atomic without a script.
Every Redis call is bounded by a short timeout; a failure raises
``StateUnavailable`` and opens a short cool-down in which calls fail at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from gateway.store.base import StateUnavailable
from gateway.store.cache import MemoryCacheStore

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

__all__ = ["MemoryResponseStore", "RedisResponseStore", "ResponseStore"]


class ResponseStore(Protocol):
    kind: str

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None: ...

    async def delete(self, key: str) -> bool: ...


class MemoryResponseStore:
    """One process's records (REDIS_URL unset): bounded by count and bytes, least
    recently used first out, expired entries dropped when met."""

    kind = "memory"

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._lru = MemoryCacheStore(max_entries=max_entries, max_bytes=max_bytes)

    def __len__(self) -> int:
        return len(self._lru)

    async def get(self, key: str) -> bytes | None:
        return self._lru.get(key)

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._lru.put(key, value, ttl_ms)

    async def delete(self, key: str) -> bool:
        return self._lru.delete(key)


class RedisResponseStore:
    """Records in Redis (standalone or Cluster), one key each."""

    kind = "redis"

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

    async def _call(self, op: Callable[[], Any]) -> Any:
        if self._clock() < self._open_until:
            raise StateUnavailable("down")
        try:
            async with asyncio.timeout(self.timeout_s):
                return await op()
        except TimeoutError:
            self._open_until = self._clock() + self.cooldown_s
            raise StateUnavailable("timeout") from None
        except (RedisError, OSError):
            self._open_until = self._clock() + self.cooldown_s
            raise StateUnavailable("error") from None

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda: self.client.get(key))
        return bytes(value) if value is not None else None

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._call(lambda: self.client.set(key, value, px=ttl_ms))

    async def delete(self, key: str) -> bool:
        return bool(await self._call(lambda: self.client.delete(key)))
