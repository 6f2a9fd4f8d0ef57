"""In-process state: the default when REDIS_URL is unset (one process, same semantics)."""

from __future__ import annotations


class MemoryBackend:
    kind = "memory"

    async def start(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
