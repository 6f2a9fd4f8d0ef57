"""Real ``redis-server`` processes for the suites (and ``bench/``): a standalone server
on a free loopback port, and a 3-primary Redis Cluster whose bus ports are free too.

Every server runs with ``--save "" --appendonly no`` in its own process group through
``tests.harness.spawn``, so it is stopped whatever happens (the fixtures in
``tests/conftest.py`` tear down, and the harness's atexit sweep catches the rest), by
the group id we own, never by name. A missing ``redis-server`` skips the test
(``make test`` installs it first: ``make system-deps``).
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.harness import Proc, Stops, clean_env, free_port, spawn, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@dataclass
class RedisServer(Stops):
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

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()

    def pause(self) -> None:
        """SIGSTOP, to this process only: the port still accepts connections, nothing
        answers."""
        self.proc.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.popen.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.proc.popen.kill()
        self.proc.popen.wait(5)

    def restart(self) -> None:
        """A fresh server on the same port (after ``kill`` or ``stop``)."""
        self.proc.stop()
        self.proc = start_redis(self.log_dir, self.name, self.port, self.extra).proc

    def stop(self) -> None:
        if self.proc.alive():
            self.resume()  # a stopped process does not act on SIGTERM until continued
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
    log_dir: Path, name: str = "redis", port: int | None = None, extra: list[str] | None = None
) -> RedisServer:
    """``redis-server`` on a free loopback port (or ``port``, to restart one in place);
    ``extra`` arguments are appended (``--cluster-enabled yes`` picks a port whose bus
    port is free too)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed (make system-deps)")
    cluster = bool(extra and "--cluster-enabled" in extra)
    port = port or (cluster_port() if cluster else free_port())
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(log_dir), *(extra or [])]
    log_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn(f"{name}-{port}", argv, clean_env(), log_dir)
    server = RedisServer(proc, port, log_dir, name, list(extra or []))
    if not wait_until(lambda: not proc.alive() or server.ping(), timeout=10) or not proc.alive():
        proc.stop()
        raise RuntimeError("redis-server did not start:\n" + proc.describe())
    return server


@dataclass
class RedisCluster(Stops):
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def flush(self) -> None:
        for n in self.nodes:
            n.flush()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def _cluster_ok(nodes: list[RedisServer]) -> bool:
    for n in nodes:
        with n.client() as c:
            info = c.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
    return True


def start_cluster(log_dir: Path, masters: int = 3) -> RedisCluster:
    nodes: list[RedisServer] = []
    try:
        for i in range(masters):
            d = log_dir / f"node{i}"
            d.mkdir(parents=True, exist_ok=True)
            extra = ["--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf")]
            extra += ["--cluster-node-timeout", "2000"]
            nodes.append(start_redis(d, f"redis-cluster{i}", extra=extra))
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        if not wait_until(lambda: _cluster_ok(nodes), timeout=20, interval=0.1):
            raise RuntimeError("redis cluster did not reach cluster_state:ok")
        # Nodes agree on the slot map a moment after the state flips to ok.
        time.sleep(0.2)
        return RedisCluster(nodes)
    except BaseException:
        for n in nodes:
            n.stop()
        raise
