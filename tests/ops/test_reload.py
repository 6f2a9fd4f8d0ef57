"""Reload without restart, over real sockets: SIGHUP to the supervisor of a real
``llm-gateway serve``, and a real file-mounted secret rotated under load."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.harness import GatewayProc, wait_until
from tests.ops.conftest import NEW_KEY, OLD_KEY, OpsUpstream
from tests.ops.helpers import StreamResult, signal_supervisor, stream_chat, write_config

pytestmark = pytest.mark.e2e

MASTER = "master-key-from-a-file-5e2b"
TEAM_A = "sk-team-a-canary-0a1b2c"
TEAM_B = "sk-team-b-canary-3d4e5f"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _keys_config(*keys: tuple[str, str], rpm: int = 6000, rpm_burst: int = 100) -> str:
    lines = ["keys:"]
    for name, key in keys:
        lines.append(f"  - {{name: {name}, key_sha256: {_digest(key)}}}")
    lines += [
        "limits:",
        f"  default_key: {{rpm: {rpm}, rpm_burst: {rpm_burst}}}",
        "models:",
        "  - alias: demo",
        "    deployments:",
        "      - {provider: mock, model: mock-1}",
    ]
    return "\n".join(lines) + "\n"


def _rotate(path: Path, text: str) -> None:
    """As Kubernetes updates a mounted secret: a new file swapped in atomically."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def _logs(gw: GatewayProc, msg: str) -> list[dict[str, Any]]:
    return [x for x in gw.json_logs() if x.get("msg") == msg]


def _chat(gw: GatewayProc, key: str) -> httpx.Response:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


def _health(gw: GatewayProc) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {MASTER}"}
    return httpx.get(gw.url + "/health", headers=headers, timeout=5).json()  # type: ignore[no-any-return]


def test_sighup_reloads_keys_and_limits_and_refuses_a_bad_config(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = tmp_path / "gateway.yaml"
    write_config(cfg, _keys_config(("team-a", TEAM_A)))
    master = tmp_path / "master"
    master.write_text(MASTER + "\n")
    env = {
        "GATEWAY_CONFIG": str(cfg),
        "GATEWAY_MASTER_KEY_FILE": str(master),
        "GATEWAY_RELOAD_POLL_SECONDS": "0",  # SIGHUP only
    }
    gw = gateway_factory(env, workers=2, name="gateway-sighup")
    first_hash = _digest_file(cfg)
    started = _logs(gw, "gateway started")
    assert started and all(x["config_sha256"] == first_hash for x in started)
    assert all(x["config_path"] == str(cfg) for x in started)
    assert _health(gw)["config"] == {"path": str(cfg), "sha256": first_hash}
    assert _chat(gw, TEAM_A).status_code == 200
    assert _chat(gw, TEAM_B).status_code == 401

    # a bad file: one line, the old config keeps serving
    cfg.write_text("models: [this is: not valid\n")
    signal_supervisor(gw, signal.SIGHUP)
    assert wait_until(lambda: _logs(gw, "config reload refused: the running config stays"))
    time.sleep(0.5)
    refused = _logs(gw, "config reload refused: the running config stays")
    assert len(refused) == 1 and "invalid YAML" in refused[0]["error"]
    assert gw.proc.alive()
    for _ in range(6):  # both workers
        assert _chat(gw, TEAM_A).status_code == 200
    assert _health(gw)["config"]["sha256"] == first_hash

    # a good one: team-b added, the key limit down to one a second
    write_config(cfg, _keys_config(("team-a", TEAM_A), ("team-b", TEAM_B), rpm=60, rpm_burst=1))
    new_hash = _digest_file(cfg)
    signal_supervisor(gw, signal.SIGHUP)
    assert wait_until(lambda: _logs(gw, "config reloaded"))
    (line,) = _logs(gw, "config reloaded")
    assert line["config_sha256"] == new_hash and line["config_path"] == str(cfg)
    assert wait_until(lambda: _chat(gw, TEAM_B).status_code in (200, 429))
    assert wait_until(lambda: _health(gw)["config"]["sha256"] == new_hash)
    statuses = [_chat(gw, TEAM_B).status_code for _ in range(4)]
    assert 429 in statuses  # the new limit applies
    assert MASTER not in gw.proc.stdout() + gw.proc.stderr()


def _digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rotated_key_file_under_load(
    gateway_factory: GatewayFactory, ops_upstream: OpsUpstream, tmp_path: Path
) -> None:
    """The provider key comes from a file; it is rotated (the provider accepting both
    keys for a moment, then only the new one) while streams and whole answers run: no
    request fails, streams in flight at the reload finish, the new key is sent from then
    on, and neither key is ever logged."""
    ops_upstream.accept_keys(OLD_KEY)
    ops_upstream.reset()
    key_file = tmp_path / "openai-api-key"
    key_file.write_text(OLD_KEY + "\n")
    env = {
        "OPENAI_API_KEY_FILE": str(key_file),
        "OPENAI_BASE_URL": ops_upstream.url,
        "GATEWAY_RELOAD_POLL_SECONDS": "1",
    }
    gw = gateway_factory(env, workers=2, name="gateway-rotate")

    async def load(stop: asyncio.Event) -> tuple[list[StreamResult], list[int]]:
        streams: list[StreamResult] = []
        wholes: list[int] = []
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits) as c:

            async def streamer() -> None:
                while not stop.is_set():
                    streams.append(await stream_chat(c, "openai/ops-slow"))

            async def caller() -> None:
                body = {"model": "openai/ops-echo", "messages": [{"role": "user", "content": "x"}]}
                while not stop.is_set():
                    wholes.append((await c.post("/v1/chat/completions", json=body)).status_code)
                    await asyncio.sleep(0.02)

            await asyncio.gather(*(streamer() for _ in range(4)), *(caller() for _ in range(4)))
        return streams, wholes

    async def scenario() -> tuple[list[StreamResult], list[int]]:
        stop = asyncio.Event()
        running = asyncio.create_task(load(stop))
        await asyncio.sleep(1.0)
        ops_upstream.accept_keys(OLD_KEY, NEW_KEY)  # the provider's overlap window
        _rotate(key_file, NEW_KEY + "\n")

        def new_key_in_use() -> bool:
            return any(r["key"] == NEW_KEY for r in ops_upstream.requests())

        assert await asyncio.to_thread(wait_until, lambda: bool(_logs(gw, "config reloaded")), 10)
        assert await asyncio.to_thread(wait_until, new_key_in_use, 10)
        await asyncio.sleep(1.5)  # both workers, and the streams begun before, are past it
        ops_upstream.accept_keys(NEW_KEY)  # the old key is revoked
        await asyncio.sleep(1.5)
        stop.set()
        return await running

    streams, wholes = asyncio.run(scenario())
    assert wholes and set(wholes) == {200}, wholes
    assert len(streams) >= 8
    assert all(s.status == 200 and s.done for s in streams), [
        (s.status, s.events[-1:]) for s in streams if not s.done
    ]
    used = [r["key"] for r in ops_upstream.requests()]
    assert used[0] == OLD_KEY and used[-1] == NEW_KEY
    last_old = max(i for i, k in enumerate(used) if k == OLD_KEY)
    assert all(k == NEW_KEY for k in used[last_old + 1 :])
    (line,) = _logs(gw, "config reloaded")
    assert line["changed"] == [str(key_file)]
    logs = gw.proc.stdout() + gw.proc.stderr()
    assert OLD_KEY not in logs and NEW_KEY not in logs
