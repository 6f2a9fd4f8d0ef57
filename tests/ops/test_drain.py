"""Graceful drain: a real SIGTERM to a real ``llm-gateway serve`` (its supervisor process
alone, as Kubernetes signals a container's PID 1) with streams in flight."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.harness import GatewayProc, wait_until
from tests.ops.helpers import (
    StreamResult,
    refused,
    signal_supervisor,
    slow_mock,
    stream_chat,
    write_config,
)

pytestmark = pytest.mark.e2e

STREAMS = 20


def _gateway(
    factory: GatewayFactory, tmp_path: Path, models: str, prestop: int, drain: int, name: str
) -> GatewayProc:
    cfg = write_config(tmp_path / "gateway.yaml", "models:\n" + models)
    env = {
        "GATEWAY_CONFIG": cfg,
        "GATEWAY_PRESTOP_SECONDS": str(prestop),
        "GATEWAY_DRAIN_SECONDS": str(drain),
    }
    return factory(env, name=name)


async def _start_streams(
    client: httpx.AsyncClient, model: str, n: int
) -> list[asyncio.Task[StreamResult]]:
    firsts = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(stream_chat(client, model, f)) for f in firsts]
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 30)
    return tasks


def _client(gw: GatewayProc) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=STREAMS * 2, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits)


def _exit_within(gw: GatewayProc, seconds: float) -> int:
    rc = gw.proc.popen.wait(seconds)
    assert "Traceback" not in gw.proc.stdout() + gw.proc.stderr(), gw.proc.describe()
    return rc


def test_sigterm_lets_streams_finish(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    """Readiness 503 at once while the listener still accepts; after the pre-stop delay
    new connections are refused; all 20 streams complete with [DONE]; exit 0."""
    prestop, drain = 1, 30
    gw = _gateway(
        gateway_factory, tmp_path, slow_mock("slow", 30, 10), prestop, drain, "gateway-drain"
    )

    async def scenario() -> tuple[list[StreamResult], float, bool]:
        async with _client(gw) as client:
            tasks = await _start_streams(client, "slow", STREAMS)
            t0 = time.monotonic()
            signal_supervisor(gw)

            def not_ready() -> bool:  # a new connection each time: the listener is open
                return httpx.get(gw.url + "/health/ready", timeout=2).status_code == 503

            saw_503 = await asyncio.to_thread(wait_until, not_ready, prestop * 0.9, 0.02)
            assert await asyncio.to_thread(wait_until, lambda: refused(gw.url), prestop + 5)
            results = await asyncio.gather(*tasks)
            return results, t0, saw_503

    results, t0, saw_503 = asyncio.run(scenario())
    assert saw_503, "readiness did not turn 503 during the pre-stop delay"
    assert [r.status for r in results] == [200] * STREAMS
    assert all(r.done for r in results), [r.events[-2:] for r in results if not r.done]
    assert all(r.error is None for r in results)
    assert _exit_within(gw, prestop + drain) == 0
    assert time.monotonic() - t0 < prestop + drain
    lines = [x for x in gw.json_logs() if x.get("logger") == "access" and x["status"] == 200]
    assert sum(1 for x in lines if x["route"] == "/v1/chat/completions") == STREAMS
    assert any(x.get("msg") == "shutting down: draining" for x in gw.json_logs())


def test_drain_deadline_ends_streams_with_the_error_event(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """A grace period shorter than the streams: each stream ends with the error event
    (no [DONE]), a whole answer still waiting gets a 503; both settled; exit 0."""
    drain = 1
    models = slow_mock("long", 200, 10) + slow_mock("late", 4, 0, latency_ms=20_000)
    gw = _gateway(gateway_factory, tmp_path, models, 0, drain, "gateway-deadline")

    async def scenario() -> tuple[list[StreamResult], httpx.Response, float]:
        async with _client(gw) as client:
            tasks = await _start_streams(client, "long", STREAMS)
            body = {"model": "late", "messages": [{"role": "user", "content": "hi"}]}
            whole = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            signal_supervisor(gw)
            results = await asyncio.gather(*tasks)
            return results, await whole, t0

    results, whole, t0 = asyncio.run(scenario())
    for r in results:
        assert r.status == 200 and not r.done and r.error is None, (r.events[-2:], r.error)
        err = r.error_event()
        assert err is not None and err["code"] == "shutting_down", r.events[-1]
        assert set(err) == {"message", "type", "param", "code"}
        assert len(r.events) > 2  # content came before the error event
    assert whole.status_code == 503
    assert whole.json()["error"]["code"] == "shutting_down"
    assert whole.headers["retry-after"] == "1"
    assert _exit_within(gw, drain + 10) == 0
    assert time.monotonic() - t0 < drain + 10
    access = [x for x in gw.json_logs() if x.get("logger") == "access"]
    stopped = [x for x in access if x.get("error") == "shutting_down"]
    assert len(stopped) == STREAMS + 1
    assert {x["status"] for x in stopped} == {200, 503}


def test_second_signal_exits_at_once(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    prestop, drain = 30, 60
    gw = _gateway(
        gateway_factory, tmp_path, slow_mock("long", 200, 10), prestop, drain, "gateway-twice"
    )

    async def scenario() -> tuple[list[StreamResult], float]:
        async with _client(gw) as client:
            tasks = await _start_streams(client, "long", 3)
            signal_supervisor(gw)
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            signal_supervisor(gw, signal.SIGINT)
            return await asyncio.gather(*tasks), t0

    results, t0 = asyncio.run(scenario())
    assert _exit_within(gw, 10) == 0
    assert time.monotonic() - t0 < 5
    for r in results:
        err = r.error_event()
        assert err is not None and err["code"] == "shutting_down", r.events[-1:]
    assert any("second signal" in json.dumps(x) for x in gw.json_logs())
