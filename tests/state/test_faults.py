"""Redis paused (SIGSTOP) for 10 s, then killed and restarted, under load from 20
clients on two gateways: never a 5xx or a hang, the limiter adds at most 60 ms at the
99th percentile during the faults (the gateway's own ``server-timing: ratelimit``), and
the gateways use Redis again within 5 s of its return."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProc, metric_sum, start_gateway
from tests.redis_server import RedisServer
from tests.state.load import p99, run_load

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.timeout(150)]

CONFIG = """
models:
  - alias: fast
    deployments:
      - {provider: mock, model: mock-1, mock: {reply_tokens: 4}}
limits:
  default_key: {rpm: 60000, rpm_burst: 1000}
"""
KEY = "fault-test-key"
TENANT = hashlib.sha256(KEY.encode()).hexdigest()[:16]
BUCKET = f"gw:{{{TENANT}}}:rl:key:{TENANT}:r"


async def _recovered(server: RedisServer, gws: list[GatewayProc], since: float) -> float:
    """Seconds from ``since`` until a gateway wrote the bucket to this Redis again
    and every gateway reports the backend up."""

    def check() -> bool:
        with server.client() as c:
            if not c.exists(BUCKET):
                return False
        return all(metric_sum(gw.metrics(), "gateway_state_backend_up") == 1 for gw in gws)

    while time.monotonic() - since < 15:
        try:
            if await asyncio.to_thread(check):
                return time.monotonic() - since
        except Exception:
            pass
        await asyncio.sleep(0.1)
    return float("inf")


def test_pause_and_kill_fail_open_then_recover(own_redis: RedisServer, state_dir: Path) -> None:
    path = state_dir / "faults.yaml"
    path.write_text(CONFIG)
    env = {"REDIS_URL": own_redis.url, "GATEWAY_CONFIG": str(path), "LOG_LEVEL": "warning"}
    gws = [start_gateway(state_dir / "logs", env, name=f"gw-fault{i}") for i in range(2)]
    try:
        asyncio.run(_scenario(own_redis, gws))
    finally:
        for gw in gws:
            gw.stop()


async def _scenario(server: RedisServer, gws: list[GatewayProc]) -> None:
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    health: dict[str, Any] = {}

    def body(_: Any) -> dict[str, Any]:
        return {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}

    async def faults() -> None:
        await asyncio.sleep(3)
        marks["stop"] = time.monotonic()
        server.pause()
        await asyncio.sleep(5)
        async with httpx.AsyncClient(timeout=5) as c:
            health.update((await c.get(gws[0].url + "/health")).json())
        await asyncio.sleep(5)
        server.resume()
        marks["cont"] = time.monotonic()
        await asyncio.to_thread(_flush, server)
        marks["recover1"] = await _recovered(server, gws, marks["cont"])
        await asyncio.sleep(max(0.0, 19 - (time.monotonic() - t0)))
        marks["kill"] = time.monotonic()
        server.kill()
        await asyncio.sleep(3)
        await asyncio.to_thread(server.restart)
        marks["back"] = time.monotonic()
        marks["recover2"] = await _recovered(server, gws, marks["back"])

    load = asyncio.create_task(
        run_load(
            [g.url for g in gws],
            30.0,
            body,
            clients=20,
            headers={"authorization": f"Bearer {KEY}"},
            backoff=(0.01, 0.03),
        )
    )
    await faults()
    samples = await load

    statuses = {s.status for s in samples}
    assert statuses <= {200, 429}, f"statuses {statuses}: a 5xx or a hang"
    assert health["status"] == "degraded" and health["rate_limits"] == "local-fallback"
    assert marks["recover1"] <= 5.0, f"no recovery within 5 s of SIGCONT: {marks}"
    assert marks["recover2"] <= 5.0, f"no recovery within 5 s of the restart: {marks}"

    def added(lo: float, hi: float) -> list[float]:
        return [s.limiter_ms for s in samples if lo <= s.sent <= hi and s.limiter_ms is not None]

    paused = added(marks["stop"], marks["cont"])
    killed = added(marks["kill"], marks["back"] + marks["recover2"])
    assert len(paused) > 100 and len(killed) > 30
    print(
        f"\nfaults: {len(samples)} requests; limiter p99 paused {p99(paused):.1f} ms, "
        f"killed {p99(killed):.1f} ms, max {max(paused + killed):.1f} ms; "
        f"recovery {marks['recover1']:.2f} s / {marks['recover2']:.2f} s"
    )
    assert p99(paused) <= 60.0
    assert p99(killed) <= 60.0
    for gw in gws:
        text = gw.metrics()
        assert metric_sum(text, "gateway_state_fallbacks_total", reason="timeout") >= 1
        assert metric_sum(text, "gateway_state_fallbacks_total", reason="down") >= 10


def _flush(server: RedisServer) -> None:
    with server.client() as c:
        c.flushall()


def test_cluster_node_paused_fails_open_then_recovers(redis_cluster: Any, state_dir: Path) -> None:
    """One primary of the cluster paused for 3 s (the one holding this tenant's slot):
    no 5xx, the fallback takes over, and Redis is used again within 5 s of its return."""
    import redis as redis_sync

    path = state_dir / "faults-cluster.yaml"
    path.write_text(CONFIG)
    env = {"REDIS_URL": redis_cluster.url, "GATEWAY_CONFIG": str(path), "LOG_LEVEL": "warning"}
    gw = start_gateway(state_dir / "logs", env, name="gw-cfault")
    nodes = redis_cluster.nodes
    rc = redis_sync.RedisCluster(host="127.0.0.1", port=nodes[0].port)
    owner_port = rc.get_node_from_key(BUCKET).port
    owner = next(n for n in nodes if n.port == owner_port)

    def written() -> bool:
        return bool(rc.exists(BUCKET))

    async def scenario() -> tuple[list[Any], float, str]:
        def body(_: Any) -> dict[str, Any]:
            return {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}

        load = asyncio.create_task(
            run_load(
                [gw.url],
                9.0,
                body,
                clients=10,
                headers={"authorization": f"Bearer {KEY}"},
                backoff=(0.01, 0.03),
            )
        )
        await asyncio.sleep(2)
        owner.pause()
        await asyncio.sleep(3)
        owner.resume()
        back = time.monotonic()
        await asyncio.to_thread(rc.delete, BUCKET)
        recovered = float("inf")
        while time.monotonic() - back < 6:
            try:
                if await asyncio.to_thread(written):
                    recovered = time.monotonic() - back
                    break
            except redis_sync.RedisError:
                pass
            await asyncio.sleep(0.1)
        samples = await load
        return samples, recovered, await asyncio.to_thread(gw.metrics)

    try:
        samples, recovered, metrics_text = asyncio.run(scenario())
    finally:
        owner.resume()
        gw.stop()
        rc.close()
    assert {s.status for s in samples} <= {200, 429}
    assert recovered <= 5.0, recovered
    assert metric_sum(metrics_text, "gateway_state_fallbacks_total", reason="timeout") >= 1
    assert metric_sum(metrics_text, "gateway_state_backend_up") == 1
    slow = [s.limiter_ms for s in samples if s.limiter_ms is not None and s.limiter_ms > 60]
    assert len(slow) <= max(3, len(samples) // 100), slow
    print(f"\ncluster node paused: {len(samples)} requests, recovery {recovered:.2f} s")
