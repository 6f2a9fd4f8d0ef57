"""The tenants' store (``base.TenantStore``): virtual keys and teams, their invalidation
messages, the cost ledger and sticky sessions; in process, or on Redis.

On Redis every key of the records carries the ``{tenants}`` hash tag (one slot: a
write is one atomic ``tenant_put.lua`` call), the ledger's the ``{spend}`` tag (one
``ledger_add.lua`` call per batch), sessions none (one key per call). Calls go
through ``RedisBackend.call``/``run``: bounded by its timeout (admin calls get a
longer one), an outage raises ``StateUnavailable``.

Invalidation travels on the ``gw:tenants`` channel. Each process keeps one
subscriber connection of its own (on a cluster, to one node: classic pub/sub
messages reach every node). While it is not subscribed (start-up, a lost
connection) ``subscribed`` is False, so readers shorten their cache; every
(re)subscription first delivers ``None`` ("drop everything cached"), since
messages sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from gateway.store.redis import RedisBackend

__all__ = ["CHANNEL", "MemoryTenantStore", "RedisTenantStore"]

log = logging.getLogger("gateway.store")

CHANNEL = "gw:tenants"
_TAG = "gw:{tenants}"
ADMIN_TIMEOUT = 2.0  # s: admin reads and writes are not on a client's hot path
_MAX_SESSIONS = 100_000  # in process


def record_key(kind: str, ident: str) -> str:
    return f"{_TAG}:{kind}:{ident}"


def digest_key(digest: str) -> str:
    return f"{_TAG}:digest:{digest}"


def index_key(kind: str) -> str:
    return f"{_TAG}:{kind}s"


class Counters:
    """In-process budget counters: ``key -> (used, expire_at unix s or 0)``."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, int]] = {}

    def used(self, key: str) -> int:
        entry = self._values.get(key)
        if entry is None:
            return 0
        if entry[1] and entry[1] < time.time():
            del self._values[key]
            return 0
        return entry[0]

    def put(self, key: str, used: int, expire_at: int) -> None:
        self._values[key] = (used, expire_at)


class MemoryTenantStore:
    """One process's tenants (REDIS_URL unset): with several Granian workers each
    worker has its own, so virtual keys need Redis beyond one worker."""

    subscribed = True

    def __init__(self) -> None:
        self.budgets = Counters()
        self._records: dict[str, dict[str, bytes]] = {"key": {}, "team": {}}
        self._digests: dict[str, bytes] = {}
        self._ledger: dict[str, dict[str, int]] = {}
        self._sessions: dict[str, tuple[str, float]] = {}
        self._listeners: list[Callable[[str | None], None]] = []

    async def start(self, on_message: Callable[[str | None], None]) -> None:
        self._listeners.append(on_message)

    async def aclose(self) -> None:
        self._listeners.clear()

    async def publish(self, message: str) -> None:
        for fn in self._listeners:
            fn(message)

    async def by_digest(self, digest: str) -> bytes | None:
        return self._digests.get(digest)

    async def get(self, kind: str, ident: str) -> bytes | None:
        return self._records[kind].get(ident)

    async def all(self, kind: str) -> list[bytes]:
        return list(self._records[kind].values())

    async def put(
        self,
        kind: str,
        ident: str,
        record: bytes | None,
        *,
        digest: str | None = None,
        drop_digest: str | None = None,
    ) -> None:
        if record is None:
            self._records[kind].pop(ident, None)
        else:
            self._records[kind][ident] = record
        if drop_digest is not None:
            self._digests.pop(drop_digest, None)
        if digest is not None and record is not None:
            self._digests[digest] = record

    async def budget_used(self, keys: Sequence[str]) -> list[int]:
        return [self.budgets.used(k) for k in keys]

    async def ledger_add(self, deltas: Mapping[str, Mapping[str, int]], ttl_s: int) -> None:
        for key, fields in deltas.items():
            h = self._ledger.setdefault(key, {})
            for f, v in fields.items():
                h[f] = h.get(f, 0) + v

    async def ledger_read(self, keys: Sequence[str]) -> list[dict[str, int]]:
        return [dict(self._ledger.get(k, {})) for k in keys]

    async def session_get(self, key: str, ttl_s: int) -> str | None:
        entry = self._sessions.get(key)
        now = time.monotonic()
        if entry is None or entry[1] < now:
            return None
        self._sessions[key] = (entry[0], now + ttl_s)
        return entry[0]

    async def session_set(self, key: str, value: str, ttl_s: int) -> None:
        if len(self._sessions) >= _MAX_SESSIONS:
            now = time.monotonic()
            self._sessions = {k: v for k, v in self._sessions.items() if v[1] >= now}
            if len(self._sessions) >= _MAX_SESSIONS:
                self._sessions.clear()
        self._sessions[key] = (value, time.monotonic() + ttl_s)


class RedisTenantStore:
    """The tenants' store on the backend's Redis (standalone or cluster)."""

    def __init__(self, backend: RedisBackend, url: str, cluster: bool) -> None:
        self._backend = backend
        self._url = url
        self._cluster = cluster
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = False
        self.ping_every = 1.0  # s: a silent subscriber connection is checked this often

    # -- invalidation ---------------------------------------------------------------------

    async def start(self, on_message: Callable[[str | None], None]) -> None:
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(on_message))

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        self.subscribed = False

    async def publish(self, message: str) -> None:
        await self._backend.call(lambda c: c.publish(CHANNEL, message), "publish", ADMIN_TIMEOUT)

    def _subscriber_url(self) -> str:
        """Standalone: the backend's URL. Cluster: the same URL at one known node (classic
        pub/sub messages are broadcast to every node of a cluster)."""
        if not self._cluster:
            return self._url
        client: Any = self._backend.client
        nodes = client.get_nodes() if client is not None else []
        if not nodes:
            return self._url
        node = nodes[int(time.monotonic()) % len(nodes)]
        parts = urlsplit(self._url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{node.host}:{node.port}" if auth else f"{node.host}:{node.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def _listen(self, on_message: Callable[[str | None], None]) -> None:
        while True:
            client: Redis | None = None
            try:
                client = Redis.from_url(
                    self._subscriber_url(), socket_connect_timeout=1.0, socket_timeout=None
                )
                pubsub = client.pubsub()
                await asyncio.wait_for(pubsub.subscribe(CHANNEL), 2.0)
                on_message(None)  # whatever was sent before now may have been missed
                self.subscribed = True
                await self._read(pubsub, on_message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if self.subscribed:
                    log.warning(
                        "tenant invalidation channel lost; key cache shortened",
                        extra={"fields": {"error": type(exc).__name__}},
                    )
                self.subscribed = False
                on_message(None)
            finally:
                self.subscribed = False
                if client is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await client.aclose()
            await asyncio.sleep(0.2)

    async def _read(self, pubsub: Any, on_message: Callable[[str | None], None]) -> None:
        """Until the connection fails: deliver messages, and PING when it is quiet (a
        server that stopped answering is found within about two ``ping_every``)."""
        heard = time.monotonic()
        pinged = False
        while True:
            msg = await asyncio.wait_for(pubsub.get_message(timeout=self.ping_every), 5.0)
            now = time.monotonic()
            if msg is not None:
                heard, pinged = now, False
                if msg.get("type") == "message":
                    data = msg.get("data")
                    on_message(data.decode() if isinstance(data, bytes) else str(data))
                continue
            if now - heard < self.ping_every:
                continue
            if pinged:
                raise TimeoutError("no answer to PING on the invalidation channel")
            await asyncio.wait_for(pubsub.ping(), 1.0)
            pinged = True

    # -- records ----------------------------------------------------------------------------

    async def by_digest(self, digest: str) -> bytes | None:
        key = digest_key(digest)
        return await self._backend.call(lambda c: c.get(key), "tenant-lookup")  # type: ignore[no-any-return]

    async def get(self, kind: str, ident: str) -> bytes | None:
        key = record_key(kind, ident)
        return await self._backend.call(lambda c: c.get(key), "tenant-get", ADMIN_TIMEOUT)  # type: ignore[no-any-return]

    async def all(self, kind: str) -> list[bytes]:
        async def read(c: Any) -> list[bytes]:
            ids = sorted(x.decode() for x in await c.smembers(index_key(kind)))
            if not ids:
                return []
            found = await c.mget([record_key(kind, i) for i in ids])
            return [r for r in found if r is not None]

        return await self._backend.call(read, "tenant-list", ADMIN_TIMEOUT)  # type: ignore[no-any-return]

    async def put(
        self,
        kind: str,
        ident: str,
        record: bytes | None,
        *,
        digest: str | None = None,
        drop_digest: str | None = None,
    ) -> None:
        keys = [record_key(kind, ident), index_key(kind)]
        mapped = digest is not None and record is not None
        if digest is not None:
            keys.append(digest_key(digest))
        if drop_digest is not None and drop_digest != digest:
            keys.append(digest_key(drop_digest))
        args: list[Any] = [ident, record or b"", 1 if mapped else 0]
        await self._backend.run("tenant_put", keys, args, ADMIN_TIMEOUT)

    async def budget_used(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []

        async def read(c: Any) -> list[int]:
            if self._cluster:
                values = await c.mget_nonatomic(list(keys))
            else:
                values = await c.mget(list(keys))
            return [int(v) if v is not None else 0 for v in values]

        return await self._backend.call(read, "budget-read", ADMIN_TIMEOUT)  # type: ignore[no-any-return]

    # -- ledger ------------------------------------------------------------------------------

    async def ledger_add(self, deltas: Mapping[str, Mapping[str, int]], ttl_s: int) -> None:
        keys = list(deltas)
        args: list[Any] = [ttl_s]
        for key in keys:
            fields = deltas[key]
            args.append(len(fields))
            for f, v in fields.items():
                args += (f, v)
        await self._backend.run("ledger_add", keys, args, ADMIN_TIMEOUT)

    async def ledger_read(self, keys: Sequence[str]) -> list[dict[str, int]]:
        async def read(c: Any) -> list[dict[str, int]]:
            pipe = c.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            rows = await pipe.execute()
            return [{f.decode(): int(v) for f, v in row.items()} for row in rows]

        return await self._backend.call(read, "ledger-read", ADMIN_TIMEOUT)  # type: ignore[no-any-return]

    # -- sessions ----------------------------------------------------------------------------

    async def session_get(self, key: str, ttl_s: int) -> str | None:
        value = await self._backend.call(lambda c: c.getex(key, ex=ttl_s), "session-get")
        return value.decode() if isinstance(value, bytes) else None

    async def session_set(self, key: str, value: str, ttl_s: int) -> None:
        await self._backend.call(lambda c: c.set(key, value, ex=ttl_s), "session-set")
