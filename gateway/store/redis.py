"""Redis (standalone or cluster) as the shared state backend."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError


class RedisBackend:
    kind = "redis"

    def __init__(self, url: str, *, timeout: float = 0.05) -> None:
        self._url = url
        self._timeout = timeout
        self.client: Redis | RedisCluster | None = None

    async def start(self) -> None:
        cluster = "cluster=true" in self._url or self._url.startswith("redis+cluster://")
        url = self._url.replace("redis+cluster://", "redis://")
        kwargs = {"socket_timeout": self._timeout, "socket_connect_timeout": 0.5}
        if cluster:
            url = url.replace("?cluster=true", "").replace("&cluster=true", "")
            self.kind = "redis-cluster"
            self.client = RedisCluster.from_url(url, **kwargs)
        else:
            self.client = Redis.from_url(url, **kwargs)

    async def ping(self) -> bool:
        if self.client is None:
            return False
        try:
            return bool(await asyncio.wait_for(self.client.ping(), 1.0))
        except (RedisError, OSError, TimeoutError):
            return False

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
