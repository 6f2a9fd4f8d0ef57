"""Fixtures the benchmarks share: a uvloop event loop per module, and the suite's one
``redis-server`` (``tests/conftest.py``), so a benchmark meets the same Redis as the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import redis_dir, redis_server

__all__ = ["loop", "redis_dir", "redis_server"]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    try:
        import uvloop

        lp = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        lp = asyncio.new_event_loop()
    try:
        yield lp
    finally:
        lp.close()
