"""The state backend Protocol that the pipeline depends on."""

from __future__ import annotations

from typing import Protocol


class StateBackend(Protocol):
    kind: str

    async def start(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers; drives /health/ready."""
        ...

    async def aclose(self) -> None: ...
