"""One slow Redis call is no outage (issue 9, item 14).

On a healthy Redis under CPU contention, a call now and then passes the 50 ms bound,
and a stalled event loop times out every call in flight at once. Each such call is
decided locally for its own request, but the backend stays on Redis: it switches to
the fallback only after failed calls in a row spanning ``down_window``. Every switch
is counted in ``gateway_state_mode_changes_total{to}``, whose series exist from the
start. The slow calls are real: the test's own redis-server is stopped (SIGSTOP)
for a moment.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from gateway.store.base import Bucket, StateUnavailable
from gateway.store.redis import RedisBackend
from gateway.telemetry import metrics
from tests.harness import metric_sum, start_gateway
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

TIMEOUT = 0.05


def _changes(to: str) -> float:
    return float(metrics.gateway_state_mode_changes_total.labels(to)._value.get())


def _bucket() -> Bucket:
    return Bucket(f"gw:{{{uuid.uuid4().hex[:8]}}}:rl:key:flap:r", 1000, 60_000_000)


async def _slow_calls(server: RedisServer, b: RedisBackend, calls: int, pause_s: float) -> int:
    """``calls`` concurrent reservations while Redis is stopped for ``pause_s``: how many
    timed out."""
    key = _bucket()
    server.pause()
    try:
        results = await asyncio.gather(
            *(b.reserve([key], [1]) for _ in range(calls)), return_exceptions=True
        )
        await asyncio.sleep(max(0.0, pause_s - TIMEOUT))
    finally:
        server.resume()
    timed_out = [r for r in results if isinstance(r, StateUnavailable)]
    assert all(r.reason == "timeout" for r in timed_out)
    return len(timed_out)


async def test_one_slow_call_does_not_switch_to_the_fallback(own_redis: RedisServer) -> None:
    b = RedisBackend(own_redis.url, timeout=TIMEOUT)
    await b.start()
    try:
        before = _changes("fallback")
        assert (await b.reserve([_bucket()], [1])).allowed
        assert await _slow_calls(own_redis, b, 1, 0.1) == 1  # decided locally...
        assert b.healthy  # ...but Redis is still the mode
        assert (await b.reserve([_bucket()], [1])).allowed
        # A stalled loop: every call in flight times out at the same moment.
        assert await _slow_calls(own_redis, b, 20, 0.1) == 20
        assert b.healthy
        assert (await b.reserve([_bucket()], [1])).allowed
        assert _changes("fallback") == before
    finally:
        await b.aclose()


async def test_sustained_failures_switch_once_and_back(own_redis: RedisServer) -> None:
    b = RedisBackend(own_redis.url, timeout=TIMEOUT, probe_interval=0.2)
    await b.start()
    fallback, shared = _changes("fallback"), _changes("shared")
    key = _bucket()
    own_redis.pause()
    try:
        reasons = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with pytest.raises(StateUnavailable) as info:
                await b.reserve([key], [1])
            reasons.append(info.value.reason)
            await asyncio.sleep(0.02)
        assert not b.healthy
        # Timed out until the window was spanned, then failing at once ("down").
        assert reasons[0] == "timeout" and reasons[-1] == "down"
        assert _changes("fallback") == fallback + 1
    finally:
        own_redis.resume()
    try:
        for _ in range(100):
            if b.healthy:
                break
            await asyncio.sleep(0.05)
        assert b.healthy
        assert (await b.reserve([key], [1])).allowed
        assert (_changes("fallback"), _changes("shared")) == (fallback + 1, shared + 1)
    finally:
        await b.aclose()


def test_mode_change_series_exist_from_the_start(own_redis: RedisServer, state_dir: Path) -> None:
    gw = start_gateway(state_dir / "logs", {"REDIS_URL": own_redis.url}, name="gw-modes")
    try:
        text = gw.metrics()
    finally:
        gw.stop()
    for to in ("fallback", "shared"):
        assert f'gateway_state_mode_changes_total{{to="{to}"}}' in text
        assert metric_sum(text, "gateway_state_mode_changes_total", to=to) == 0
