"""Fixtures the benchmarks share with the tests: each kernel's py/c twin fixture
(``tests/speedups/conftest.py``), so every benchmark reports py against c, and the
suite's one ``redis-server`` (``tests/conftest.py``); plus a uvloop loop per module."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import redis_dir, redis_server
from tests.speedups.conftest import bucket_impl, cachekey_impl, sse_impl

__all__ = ["bucket_impl", "cachekey_impl", "loop", "redis_dir", "redis_server", "sse_impl"]


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
