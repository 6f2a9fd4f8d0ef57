"""Fixtures for the shared-state tests: real ``redis-server`` processes on free loopback
ports (standalone, and a 3-primary Redis Cluster), and the backend factory the contract
tests run on (memory, redis, redis-cluster).

Every server runs with ``--save "" --appendonly no`` in its own process group through
``tests.harness.spawn``; fixtures stop them at the end whatever happened (plus the
harness's atexit sweep), by the group id we own.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.harness import Proc, free_port, spawn, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class RedisServer:
    proc: Proc
    port: int
    log_dir: Path
    name: str
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def ping(self) -> bool:
        with self.client() as c:
            return bool(c.ping())

    def pause(self) -> None:
        self.proc.popen.send_signal(19)  # SIGSTOP, to this process only

    def resume(self) -> None:
        self.proc.popen.send_signal(18)  # SIGCONT

    def kill(self) -> None:
        self.proc.popen.kill()
        self.proc.popen.wait(5)

    def restart(self) -> None:
        """Start a fresh server on the same port (after ``kill``)."""
        self.proc.stop()
        fresh = start_redis(self.log_dir, self.name, self.port, self.extra)
        self.proc = fresh.proc

    def stop(self) -> None:
        self.proc.stop(grace=2.0)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port <= 55535 whose cluster bus port (+10000) is free too."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 55535)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def start_redis(
    log_dir: Path, name: str, port: int | None = None, extra: list[str] | None = None
) -> RedisServer:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed (make system-deps)")
    cluster = bool(extra and "--cluster-enabled" in extra)
    port = port or (cluster_port() if cluster else free_port())
    args = [
        REDIS_SERVER,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(log_dir),
        *(extra or []),
    ]
    proc = spawn(f"{name}-{port}", args, {"PATH": "/usr/bin:/bin"}, log_dir)
    server = RedisServer(proc, port, log_dir, name, list(extra or []))
    if not wait_until(lambda: not proc.alive() or server.ping(), timeout=10) or not proc.alive():
        proc.stop()
        raise RuntimeError("redis-server did not start:\n" + proc.describe())
    return server


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def start_cluster(log_dir: Path, masters: int = 3) -> RedisCluster:
    nodes: list[RedisServer] = []
    try:
        for i in range(masters):
            d = log_dir / f"node{i}"
            d.mkdir(parents=True, exist_ok=True)
            extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(d / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
            nodes.append(start_redis(d, f"redis-cluster{i}", extra=extra))
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )

        def ok() -> bool:
            for n in nodes:
                with n.client() as c:
                    info = c.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
            return True

        if not wait_until(ok, timeout=20, interval=0.1):
            raise RuntimeError("redis cluster did not reach cluster_state:ok")
        # Nodes agree on the slot map a moment after the state flips to ok.
        time.sleep(0.2)
        return RedisCluster(nodes)
    except BaseException:
        for n in nodes:
            n.stop()
        raise


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def redis_server(state_dir: Path) -> Iterator[RedisServer]:
    server = start_redis(state_dir / "redis-main", "redis-main")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(state_dir: Path) -> Iterator[RedisCluster]:
    cluster = start_cluster(state_dir / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_redis(state_dir: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to pause or kill."""
    server = start_redis(state_dir / f"own-{request.node.name[:40]}", "redis-own")
    try:
        yield server
    finally:
        server.resume()
        server.stop()


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """A started state backend of each kind; Redis ones on a flushed database."""
    from gateway.store.memory import MemoryBackend
    from gateway.store.redis import RedisBackend

    kind = request.param
    if kind == "memory":
        yield MemoryBackend()
        return
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with server.client() as c:
            c.flushall()
        b = RedisBackend(server.url, timeout=2.0)
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        for n in cluster.nodes:
            with n.client() as c:
                c.flushall()
        b = RedisBackend(cluster.url, timeout=2.0)
    await b.start()
    try:
        yield b
    finally:
        await b.aclose()
