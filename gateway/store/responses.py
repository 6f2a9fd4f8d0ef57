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
``CacheUnavailable`` and opens a short cool-down in which calls fail at once
(``BoundedRedis``, shared with the response cache).
"""

from __future__ import annotations

from typing import Protocol

from gateway.store.cache import BoundedRedis, MemoryCacheStore

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


class RedisResponseStore(BoundedRedis):
    """Records in Redis (standalone or Cluster), one key each; a failure (or the
    cool-down after one) raises ``CacheUnavailable``."""

    kind = "redis"

    async def get(self, key: str) -> bytes | None:
        value = await self._bounded(lambda: self.client.get(key))
        return bytes(value) if value is not None else None

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._bounded(lambda: self.client.set(key, value, px=ttl_ms))

    async def delete(self, key: str) -> bool:
        return bool(await self._bounded(lambda: self.client.delete(key)))
