"""Helpers of bench/e2e.py that need nothing of it: the gateway's production profile
(its config file), a minimal Redis client for the bench's own redis-server, and what
the bench reads from /proc (CPU time and RSS of a process tree).

The production profile is the gateway as an operator runs it: ``REDIS_URL`` set, a
config file with several aliases, the response cache on for the benchmarked alias,
API keys in ``keys:`` and RPM/TPM limits on the key, on the alias and on the
deployment. The limits are far above anything one machine sends, so nothing is
refused: they cost what they cost (the Redis script, the token count) and a 429 in
the report means a limit was mis-set. Every request is a cache miss: the bodies
carry ``PLACEHOLDER``, which ``bench/wrk/post_unique.lua`` (and the smoke check and
TTFB probe) replace with a per-request value, so every cache key differs.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PLACEHOLDER = "@@UNIQUE@@"
PRODUCTION_ALIAS = "bench-chat"  # the alias the production targets are measured on
# Far above what wrk can send from one core (~30,000 requests/s, ~3,000 tokens each).
HIGH_LIMITS = "{rpm: 10000000, tpm: 10000000000}"
CACHE_TTL_S = 60


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def production_config(base_url: str, key: str) -> str:
    """The production profile's YAML for one upstream base URL (one per mode).

    Four aliases; ``bench-chat`` (the measured one) has two deployments on the
    canned upstream (weighted routing between them), the cache on, a fallback alias
    and limits on every scope; the others are there as a real config has them.
    Deployments name their key variable, as they must with their own ``base_url``.
    """
    dep = f"base_url: {base_url}, api_key_env: OPENAI_API_KEY, limits: {HIGH_LIMITS}"
    return f"""\
# bench/e2e.py production profile (generated): see bench/profiles.py
keys:
  - name: bench
    key_sha256: {key_digest(key)}
    limits: {HIGH_LIMITS}
  - name: other-team
    key_sha256: {key_digest("not-sent-by-the-bench")}
    limits: {{rpm: 600, tpm: 1000000}}
    models: [bench-smart]
limits:
  default_key: {{rpm: 60, tpm: 100000}}
models:
  - alias: {PRODUCTION_ALIAS}
    cache: {{ttl: {CACHE_TTL_S}}}
    limits: {HIGH_LIMITS}
    fallbacks: [bench-smart]
    deployments:
      - {{provider: openai, model: gpt-4o-mini, weight: 3, {dep}}}
      - {{provider: openai, model: gpt-4o-mini-2024-07-18, weight: 1, {dep}}}
  - alias: bench-smart
    limits: {HIGH_LIMITS}
    deployments:
      - {{provider: openai, model: gpt-4o, {dep}}}
  - alias: bench-reasoning
    strategy: least-latency
    deployments:
      - {{provider: openai, model: o3-mini, {dep}}}
      - {{provider: openai, model: o4-mini, {dep}}}
  - alias: bench-embed
    deployments:
      - {{provider: openai, model: text-embedding-3-small, {dep}}}
"""


def soak_config(upstream: str) -> str:
    """Soak-mode YAML: the default profile (no Redis, keys, limits or cache) with one
    alias per upstream behaviour, since nginx routes on the path and not on the body."""
    out = ["# bench/e2e.py --soak (generated): see bench/soak.py", "models:"]
    for alias, path in SOAK_ALIASES.items():
        out += [
            f"  - alias: {alias}",
            "    deployments:",
            f"      - {{provider: openai, model: gpt-4o-mini, base_url: {upstream}{path}, "
            "api_key_env: OPENAI_API_KEY}",
        ]
        if alias.startswith("soak-err"):  # one quick retry, so errors do not hold connections
            out.append("    retry: {attempts: 2, backoff: 0.005, max_backoff: 0.02}")
    return "\n".join(out) + "\n"


# alias -> the nginx base path (bench/nginx/nginx.conf.template)
SOAK_ALIASES = {
    "soak-json": "/v1",
    "soak-stream": "/stream/v1",
    "soak-slow": "/slow/v1",  # a paced stream (2 KB/s): client aborts land mid-stream
    "soak-err500": "/error500/v1",
    "soak-err429": "/error429/v1",
}


# --------------------------------------------------------------------------- metrics

# What says whether the production profile did what it should: every request a cache
# miss, Redis never given up on, no limit refusing anything.
WATCHED_METRICS = (
    "llm_cache_requests_total",
    "llm_cache_errors_total",
    "gateway_state_fallbacks_total",
    "gateway_state_mode_changes_total",
    "llm_rate_limit_exceeded_total",
)


def scrape(port: int, names: Iterable[str] = WATCHED_METRICS) -> dict[str, float]:
    """``name{label=value,...}`` -> value from the gateway's /metrics, summed over
    ``model`` and ``provider`` (kept: ``result``, ``op``, ``reason``, ``scope``...)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace").partition("\r\n\r\n")[2]
    wanted = tuple(names)
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) not in wanted:
            continue
        labels = [
            kv.replace('"', "")
            for kv in (m.group(2) or "").split(",")
            if kv and not kv.startswith(("model=", "provider="))
        ]
        key = f"{m.group(1)}{{{','.join(labels)}}}" if labels else m.group(1)
        out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


# --------------------------------------------------------------------------- /proc

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rpartition(")")[2].split()


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (Granian forks its workers from the root)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue  # gone
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / CLK_TCK


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


# --------------------------------------------------------------------------- Redis


class RedisError(Exception):
    pass


def _encode(args: Iterable[str | bytes]) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out += [b"$%d\r\n" % len(p), p, b"\r\n"]
    return b"".join(out)


def _read(f: Any) -> Any:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RedisError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read(f) for _ in range(n)]
    raise RedisError(f"unexpected reply {line[:40]!r}")


def redis_call(port: int, *args: str, timeout: float = 5.0) -> Any:
    """One command on a fresh loopback connection (the bench calls Redis rarely)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_encode(args))
        with s.makefile("rb") as f:
            return _read(f)


class RedisServer:
    """A redis-server of the bench's own: free port, own directory, no persistence.
    ``start(argv, log)`` runs it (the caller pins it and stops it at the end)."""

    def __init__(
        self, exe: str, prefix: Path, start: Callable[[list[str], Path], subprocess.Popen[bytes]]
    ) -> None:
        prefix.mkdir(exist_ok=True)
        self.port = free_port()
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(prefix)]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        log = prefix / "redis.log"
        self.proc = start(argv, log)
        deadline = time.monotonic() + 15.0
        while True:
            try:
                if redis_call(self.port, "PING") == "PONG":
                    break
            except (OSError, RedisError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace").strip()[-300:] if log.exists() else ""
                raise RedisError(f"redis-server did not start: {text}")
            time.sleep(0.1)
        self.version = str(
            parse_info(redis_call(self.port, "INFO", "server").decode()).get("redis_version", "?")
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def reset(self) -> None:
        """Empty, between targets: no bucket, cache entry or script of the last one."""
        redis_call(self.port, "FLUSHALL")
        redis_call(self.port, "SCRIPT", "FLUSH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def redis_stats(port: int) -> dict[str, float]:
    """One ``INFO all``: calls per command (``cmd:NAME``; commands run by Lua scripts
    count too), read events (``reads``: one per request a client sends, so round
    trips), Redis's own CPU seconds (``cpu``)."""
    info = parse_info(redis_call(port, "INFO", "all").decode())
    out: dict[str, float] = {}
    for k, v in info.items():
        if k.startswith("cmdstat_") and (m := re.search(r"calls=(\d+)", v)):
            out["cmd:" + k.removeprefix("cmdstat_")] = float(m.group(1))
    out["cpu"] = float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))
    out["reads"] = float(info.get("total_reads_processed", 0))
    return out


def redis_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What happened between two ``redis_stats``, minus what taking them did: the first
    one's INFO command and its connection's close, the second one's request."""
    keys = set(before) | set(after)
    out = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}
    out["cmd:info"] = out.get("cmd:info", 0.0) - 1
    out["reads"] = out.get("reads", 0.0) - 2
    return {k: v for k, v in out.items() if v > 0 or k in ("cpu", "reads")}
