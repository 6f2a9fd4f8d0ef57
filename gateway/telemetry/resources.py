"""Process and container resource gauges, sampled by a daemon thread in each worker.

Open connections are counted from ``/proc``: the TCP sockets this process holds
(``/proc/self/fd``) that are established, as ``inbound`` (to a port this process
listens on: clients) or ``outbound`` (upstreams, Redis, a collector).

prometheus-client's own process collector does not work in multiprocess mode (the
``/metrics`` listener runs in the supervisor and reads only the workers' files), so
each worker writes its resident memory and open descriptors into gauges that add up
over live workers, and the container's memory use and limit (the same for every
worker) from its cgroup, which is what ``HighMemoryUsage`` compares. Linux only;
elsewhere the gauges keep their initial value. A sample costs a few small reads.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

from gateway.telemetry import metrics

INTERVAL_S = 5.0
_CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 62  # cgroup v1 reports "no limit" as a page-rounded 2^63 - 1

_lock = threading.Lock()
_started_pid: int | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def rss_bytes() -> int | None:
    statm = _read(Path("/proc/self/statm"))
    if statm is None:
        return None
    return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


_ESTABLISHED, _LISTEN = "01", "0A"


def open_connections(proc: Path = Path("/proc/self")) -> tuple[int, int] | None:
    """(inbound, outbound) established TCP connections of this process."""
    try:
        fds = os.listdir(proc / "fd")
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(proc / "fd" / fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    listening: set[str] = set()
    established: list[str] = []  # local ports
    for table in ("tcp", "tcp6"):
        text = _read(proc / "net" / table) or ""
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) < 10 or parts[9] not in inodes:
                continue
            port = parts[1].rsplit(":", 1)[-1]
            if parts[3] == _LISTEN:
                listening.add(port)
            elif parts[3] == _ESTABLISHED:
                established.append(port)
    inbound = sum(1 for port in established if port in listening)
    return inbound, len(established) - inbound


def _stat_value(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def container_memory(root: Path = _CGROUP) -> tuple[int, float] | None:
    """(working set bytes, limit bytes or +Inf) of this process's cgroup, v2 or v1."""
    current = _read(root / "memory.current")
    if current is not None:  # cgroup v2, namespaced: the container's own group
        stat = _read(root / "memory.stat") or ""
        limit_text = (_read(root / "memory.max") or "max").strip()
        used = int(current) - _stat_value(stat, "inactive_file")
    else:
        v1 = root / "memory"
        usage = _read(v1 / "memory.usage_in_bytes")
        if usage is None:
            return None
        stat = _read(v1 / "memory.stat") or ""
        limit_text = (_read(v1 / "memory.limit_in_bytes") or "max").strip()
        used = int(usage) - _stat_value(stat, "total_inactive_file")
    limit = math.inf if limit_text == "max" or int(limit_text) >= _UNLIMITED else int(limit_text)
    return max(0, used), float(limit)


def sample() -> None:
    rss = rss_bytes()
    if rss is not None:
        metrics.gateway_process_resident_memory_bytes.set(rss)
    fds = open_fds()
    if fds is not None:
        metrics.gateway_process_open_fds.set(fds)
    conns = open_connections()
    if conns is not None:
        metrics.gateway_process_open_connections.labels("inbound").set(conns[0])
        metrics.gateway_process_open_connections.labels("outbound").set(conns[1])
    mem = container_memory()
    if mem is not None:
        metrics.gateway_container_memory_working_set_bytes.set(mem[0])
        metrics.gateway_container_memory_limit_bytes.set(mem[1])


def _loop() -> None:
    stop = threading.Event()
    while not stop.wait(INTERVAL_S):
        try:
            sample()
        except Exception:  # a bad read must never kill the thread or the worker
            pass


def start_sampler() -> None:
    """Take one sample now and start the sampling thread, once per process."""
    global _started_pid
    with _lock:
        if _started_pid == os.getpid():
            return
        _started_pid = os.getpid()
    sample()
    threading.Thread(target=_loop, name="gateway-resources", daemon=True).start()
