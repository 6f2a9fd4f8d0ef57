#!/usr/bin/env python3
"""End-to-end load benchmark: the gateway and its references behind one canned upstream.

    .venv/bin/python bench/e2e.py [--duration 10] [--only NAME,...] [--concurrency 1,8,32]
                                  [--modes json,stream] [--json out.json]
    .venv/bin/python bench/e2e.py --soak [--soak-requests 200000] [--json out.json]

An nginx started here (own config and temp dir, one worker, pinned to the load CPU)
answers ``POST /v1/chat/completions`` with a canned chat.completion and
``POST /stream/v1/chat/completions`` with a canned SSE stream. Each target is started
pinned to the server CPU, measured with wrk (pinned to the load CPU) at each
concurrency, non-streaming and streaming, then stopped. A raw-socket probe measures
the streaming time to first byte at concurrency 1. Every target is started once per
mode, with that mode's upstream base URL (nginx cannot route on the JSON body and the
gateway does not forward client headers). Around the highest-concurrency cell the
CPU time of each target's process tree is read from /proc (CPU per request), and its
RSS after the run; for the production profile (bench/profiles.py: Redis, keys,
limits, cache on, every request a miss) also Redis's command counts. ``--soak``
runs bench/soak.py instead: a long mixed run that watches the gateway's RSS.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import profiles
import rounds

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
VENV_BIN = ROOT / ".venv" / "bin"
LITELLM_VENV = WORK / "litellm-venv"
PYDEPS = WORK / "pydeps"  # httpx-aiohttp, --no-deps, beside (not in) .venv
LUA = BENCH / "wrk" / "post.lua"
LUA_UNIQUE = BENCH / "wrk" / "post_unique.lua"  # a different body per request: cache misses
NGINX_DIR = BENCH / "nginx"
CANNED_BODIES = ("chat.json", "chat_stream.sse", "embeddings.json")

TARGETS: dict[str, str] = {
    "upstream": "nginx alone, the floor (shares the load CPU with wrk)",
    "bare-httpx": "Granian + raw ASGI pass-through, one default httpx.AsyncClient",
    "bare-aiohttp": "Granian + raw ASGI pass-through, one aiohttp.ClientSession",
    "bare-httpx-aiohttp": "Granian + raw ASGI pass-through, httpx over httpx_aiohttp transport",
    "gateway": "llm-gateway serve --workers 1 (this project, default transport)",
    "gateway-production": "llm-gateway serve --workers 1, production profile: Redis, keys, "
    "RPM/TPM limits on key, alias and deployment, cache on (every request a miss)",
    "gateway-2w": "llm-gateway serve --workers 2, default profile, not pinned",
    "gateway-production-2w": "llm-gateway serve --workers 2, production profile, not pinned",
    "litellm": "LiteLLM proxy from PyPI, --num_workers 1",
}
EXTRA_TARGETS: dict[str, str] = {
    "gateway-httpx": "llm-gateway with GATEWAY_UPSTREAM_TRANSPORT=httpx (opt-in via --only)",
    "gateway-aiohttp": "llm-gateway with GATEWAY_UPSTREAM_TRANSPORT=aiohttp (opt-in via --only)",
    "bare-raw": "Granian + raw ASGI pass-through over a minimal HTTP/1.1 client: what "
    "aiohttp's client costs the ceiling (opt-in via --only; bench/passthrough_raw.py)",
}
MODES = ("json", "stream")
UNPINNED = ("gateway-2w", "gateway-production-2w")  # two workers on every CPU
PRODUCTION = {"gateway-production", "gateway-production-2w"}
PASSTHROUGH_MODULES = {
    "bare-httpx": "passthrough_httpx",
    "bare-aiohttp": "passthrough_aiohttp",
    "bare-httpx-aiohttp": "passthrough_httpx_aiohttp",
    "bare-raw": "passthrough_raw",
}
# Variables that would change what the targets do; the targets get a clean set.
SCRUBBED_PREFIXES = (
    "GATEWAY_",
    "OPENAI_",
    "ANTHROPIC_",
    "AZURE_",
    "GOOGLE_",
    "REDIS_",
    "LITELLM_",
    "GRANIAN_",
    "PROMETHEUS_",
    "DATABASE_URL",
    "PYTHONPATH",
)
API_KEY = "bench-key"


class Skip(Exception):
    """A target cannot run here (install failed, tool missing); the run goes on."""


# --------------------------------------------------------------------------- results


@dataclass
class Cell:
    concurrency: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    cpu_s: float | None = None  # CPU time of the target's process tree during the cell
    redis: dict[str, float] = field(default_factory=dict)  # calls per command, "cpu" seconds

    @property
    def cpu_us_per_req(self) -> float | None:
        if self.cpu_s is None or not self.requests:
            return None
        return self.cpu_s * 1e6 / self.requests

    def redis_per_req(self) -> dict[str, float]:
        """Per request: ``round trips`` (Redis read events), ``commands`` (those run by
        Lua scripts included), ``cpu_us`` (Redis's CPU) and each command's calls."""
        if not self.redis or not self.requests:
            return {}
        n = self.requests
        out = {k[4:]: v / n for k, v in self.redis.items() if k.startswith("cmd:")}
        out = dict(sorted(out.items(), key=lambda kv: -kv[1]))
        return {
            "round trips": self.redis.get("reads", 0.0) / n,
            "commands": sum(out.values()),
            "cpu_us": self.redis.get("cpu", 0.0) * 1e6 / n,
            **out,
        }

    @property
    def flagged(self) -> bool:
        return bool(self.error or self.non_2xx or any(self.socket_errors.values()))

    def problems(self) -> str:
        parts = []
        if self.error:
            parts.append(self.error)
        if self.non_2xx:
            parts.append(f"{self.non_2xx} non-2xx/3xx responses")
        errs = {k: v for k, v in self.socket_errors.items() if v}
        if errs:
            parts.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errs.items()))
        return "; ".join(parts)


@dataclass
class ModeResult:
    status: str = "not run"  # ok | failed to start | bad response | skipped | interrupted
    note: str = ""
    cells: dict[int, Cell] = field(default_factory=dict)
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    ttfb_samples: int = 0
    rss_mib: float | None = None  # the target's process tree after the run
    processes: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # profiles.WATCHED_METRICS


@dataclass
class TargetResult:
    name: str
    description: str
    modes: dict[str, ModeResult] = field(default_factory=dict)


# --------------------------------------------------------------------------- processes


class Processes:
    """Every child runs in its own session (process group) and is stopped by group."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        capture: bool = False,
    ) -> subprocess.Popen[bytes]:
        out: Any = subprocess.PIPE if capture else subprocess.DEVNULL
        if log is not None:
            out = log.open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                out.close()
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group may outlive its leader (workers); make sure it is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.live)):
            self.stop(proc, grace=3.0)


PROCS = Processes()


@dataclass
class Cpus:
    server: int | None
    load: int | None

    def pin(self, argv: list[str], which: str) -> list[str]:
        cpu = self.server if which == "server" else self.load
        if cpu is None or not shutil.which("taskset"):
            return argv
        return ["taskset", "-c", str(cpu), *argv]


free_port = profiles.free_port


def tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())[-600:]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- installs


def find_tool(name: str) -> str | None:
    """``which``, plus the sbin directories a non-root PATH lacks (nginx lives there)."""
    if found := shutil.which(name):
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        if os.access(path := f"{directory}/{name}", os.X_OK):
            return path
    return None


def ensure_system_tools() -> None:
    """nginx and wrk from Debian, installed only when missing."""
    wanted = {"nginx": ["nginx-light", "nginx"], "wrk": ["wrk"], "taskset": ["util-linux"]}
    missing = {tool: pkgs for tool, pkgs in wanted.items() if not find_tool(tool)}
    if not missing:
        return
    if not shutil.which("apt-get"):
        sys.exit(f"e2e: missing {', '.join(missing)} and no apt-get to install them")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"e2e: installing {', '.join(missing)} with apt-get", file=sys.stderr)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=False, timeout=600)
    for tool, pkgs in missing.items():
        for pkg in pkgs:  # nginx-light is the small build; on newer Debian it is just nginx
            cmd = [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg]
            if subprocess.run(cmd, env=env, check=False, timeout=900).returncode == 0:
                break
        if not find_tool(tool):
            sys.exit(f"e2e: could not install {tool} (tried apt-get install {' '.join(pkgs)})")


def ensure_httpx_aiohttp() -> Path | None:
    """Directory to put on PYTHONPATH for ``httpx_aiohttp`` (None: .venv already has it)."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        metadata.version("httpx-aiohttp")
        return None
    if (PYDEPS / "httpx_aiohttp").is_dir():
        return PYDEPS
    print("e2e: installing httpx-aiohttp into bench/.work/pydeps (--no-deps)", file=sys.stderr)
    WORK.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(PYDEPS)]
    done = subprocess.run([*cmd, "httpx-aiohttp"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not (PYDEPS / "httpx_aiohttp").is_dir():
        raise Skip(f"pip install httpx-aiohttp failed: {done.stderr.strip()[-300:]}")
    return PYDEPS


def ensure_litellm() -> Path:
    """bench/.work/litellm-venv with ``litellm[proxy]``; created on first use, reused after."""
    exe = LITELLM_VENV / "bin" / "litellm"
    stamp = LITELLM_VENV / ".bench-installed"
    if exe.exists() and stamp.exists():
        return exe
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "litellm-install.log"
    print(
        f"e2e: installing litellm[proxy] into {LITELLM_VENV} (slow once; log {log})",
        file=sys.stderr,
    )
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    py = LITELLM_VENV / "bin" / "python"
    steps = [
        [base_python, "-m", "venv", str(LITELLM_VENV)],
        [str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(py), "-m", "pip", "install", "-q", "litellm[proxy]"],
    ]
    with log.open("ab") as out:
        for step in steps:
            if py.exists() and step[1:3] == ["-m", "venv"]:
                continue
            try:
                rc = subprocess.run(
                    step, stdout=out, stderr=subprocess.STDOUT, timeout=1800
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            if rc != 0 and "--upgrade" not in step:
                raise Skip(f"litellm install failed ({shlex.join(step)}): {tail(log, 3)}")
    if not exe.exists():
        raise Skip(f"litellm install left no {exe}")
    stamp.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return exe


# --------------------------------------------------------------------------- upstream


class Upstream:
    """The canned nginx, on a free loopback port, with everything under ``prefix``."""

    def __init__(self, prefix: Path, cpus: Cpus) -> None:
        self.prefix = prefix
        self.port = free_port()
        bodies = prefix / "bodies"
        bodies.mkdir()
        for name in CANNED_BODIES:
            shutil.copyfile(NGINX_DIR / name, bodies / name)
            (bodies / name).chmod(0o644)
        conf = (NGINX_DIR / "nginx.conf.template").read_text()
        conf = conf.replace("@@PREFIX@@", str(prefix)).replace("@@PORT@@", str(self.port))
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(conf)
        for path in (prefix.parent, prefix, bodies):  # workers run as nobody when root starts nginx
            path.chmod(0o755)
        nginx = find_tool("nginx")
        assert nginx is not None
        self.version = subprocess.run(
            [nginx, "-v"], capture_output=True, text=True, check=False
        ).stderr.strip()
        log = prefix / "nginx.out"
        argv = cpus.pin(
            [nginx, "-p", str(prefix), "-c", str(self.conf), "-e", str(prefix / "error.log")],
            "load",
        )
        self.proc = PROCS.start(argv, log=log)
        if not wait_ready(self.port, self.proc, 15.0):
            raise SystemExit(f"e2e: nginx did not start: {tail(log)} {tail(prefix / 'error.log')}")

    def base_url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}" + ("/stream/v1" if mode == "stream" else "/v1")


# --------------------------------------------------------------------------- raw HTTP/1.1


@dataclass
class Exchange:
    status: int
    headers: dict[str, str]
    body: bytes
    ttfb_s: float  # request written -> first byte of the response body
    total_s: float
    keep_alive: bool


def request_bytes(port: int, path: str, body: bytes, key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nAccept: */*\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
) -> Exchange:
    t0 = time.perf_counter()
    writer.write(req)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    keep_alive = headers.get("connection", "").lower() != "close"
    parts: list[bytes] = []
    first: float | None = None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            byte = await reader.readexactly(1)
            first = first or time.perf_counter()
            parts += [byte, await reader.readexactly(size - 1)]
            await reader.readexactly(2)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length:
            parts.append(await reader.readexactly(1))
            first = time.perf_counter()
            parts.append(await reader.readexactly(length - 1))
    else:  # delimited by close
        parts.append(await reader.read(1))
        first = time.perf_counter()
        parts.append(await reader.read())
        keep_alive = False
    end = time.perf_counter()
    return Exchange(status, headers, b"".join(parts), (first or end) - t0, end - t0, keep_alive)


async def one_request(port: int, req: bytes) -> Exchange:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await exchange(reader, writer, req)
    finally:
        writer.close()


async def ttfb_probe(
    port: int, req: bytes | Callable[[int], bytes], n: int, budget_s: float
) -> list[float]:
    """Sequential keep-alive requests; returns TTFB seconds for the measured ones.
    ``req`` is the request, or makes the i-th one (all different: cache misses)."""
    deadline = time.monotonic() + budget_s
    samples: list[float] = []
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    warmup = 10
    try:
        for i in range(warmup + n):
            if time.monotonic() > deadline:
                break
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            ex = await asyncio.wait_for(
                exchange(*conn, req if isinstance(req, bytes) else req(i)), 15.0
            )
            if ex.status // 100 != 2:
                raise RuntimeError(f"status {ex.status}")
            if i >= warmup:
                samples.append(ex.ttfb_s)
            if not ex.keep_alive:
                conn[1].close()
                conn = None
    finally:
        if conn is not None:
            conn[1].close()
    return samples


def wait_ready(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """Poll until the port answers an HTTP request (any status) or the process exits."""
    deadline = time.monotonic() + timeout
    probe = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
                s.settimeout(5.0)
                s.sendall(probe)
                if s.recv(16).startswith(b"HTTP/"):
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def smoke_check(
    port: int, req: bytes, mode: str, expect: dict[str, str] | None = None
) -> str | None:
    """One real request; None when the answer looks like what the mode expects
    (and carries the ``expect`` headers, lower-case names)."""
    try:
        ex = asyncio.run(asyncio.wait_for(one_request(port, req), 30.0))
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        return f"{type(exc).__name__}: {exc}"
    snippet = ex.body[:300].decode("utf-8", "replace")
    if ex.status // 100 != 2:
        return f"status {ex.status}: {snippet}"
    if mode == "stream" and b"chat.completion.chunk" not in ex.body:
        return f"not an SSE chat stream: {snippet}"
    if mode == "json" and b'"choices"' not in ex.body:
        return f"not a chat.completion: {snippet}"
    for name, value in (expect or {}).items():
        if ex.headers.get(name) != value:
            return f"{name}: {ex.headers.get(name)!r}, expected {value!r}"
    return None


# --------------------------------------------------------------------------- wrk

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str, concurrency: int) -> Cell:
    cell = Cell(concurrency)
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        cell.rps = float(m.group(1))
    if m := re.search(r"^\s*50(?:\.0+)?%\s+(\S+)", out, re.M):
        cell.p50_ms = _ms(m.group(1))
    if m := re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", out, re.M):
        cell.p99_ms = _ms(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        cell.requests = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        cell.non_2xx = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        cell.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if cell.rps is None or cell.requests == 0:
        cell.error = "no requests completed: " + " ".join(out.split())[-300:]
    return cell


def run_wrk(
    cpus: Cpus,
    url: str,
    body_file: Path,
    key: str,
    concurrency: int,
    seconds: int,
    unique: bool = False,
) -> Cell:
    """One wrk cell; ``unique``: a different body per request (post_unique.lua)."""
    wrk = find_tool("wrk")
    assert wrk is not None
    argv = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    argv = cpus.pin([*argv, "-s", str(LUA_UNIQUE if unique else LUA), url], "load")
    env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_KEY": key}
    env["BENCH_NONCE"] = secrets.token_hex(6)
    proc = PROCS.start(argv, env=env, capture=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        PROCS.stop(proc)
        return Cell(concurrency, error="wrk did not finish in time")
    PROCS.live.remove(proc)
    return parse_wrk(out.decode(errors="replace"), concurrency)


# --------------------------------------------------------------------------- targets


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ready_timeout: float
    model: str = "openai/gpt-4o-mini"
    path: str = "/v1/chat/completions"
    key: str = API_KEY  # the bearer key clients send
    pinned: bool = True  # to the server CPU; False: free on every CPU (shared with the load)
    unique: bool = False  # bodies carry profiles.PLACEHOLDER: a different one per request
    expect: dict[str, str] = field(default_factory=dict)  # headers the smoke check wants
    redis: profiles.RedisServer | None = None  # count its commands around the top cell
    metrics_port: int | None = None  # scrape profiles.WATCHED_METRICS at the end


def gateway_launch(port: int, workers: int, **env: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of ``llm-gateway serve`` (access log off, own metrics port)."""
    exe = VENV_BIN / "llm-gateway"
    if not exe.exists():
        raise Skip(f"{exe} not found (run `make install`)")
    argv = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers)]
    full = clean_env(
        OPENAI_API_KEY=API_KEY, METRICS_PORT=str(free_port()), LOG_LEVEL="warning", **env
    )
    return argv, full


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, cpus: Cpus) -> None:
        self.args = args
        self.tmp = tmp
        self.cpus = cpus
        self.upstream = Upstream(tmp / "nginx", cpus)
        self.litellm_version: str | None = None
        self._redis: profiles.RedisServer | Skip | None = None

    def redis(self) -> profiles.RedisServer:
        """The one redis-server of the run (pinned with nginx and wrk), started on first
        use, stopped with everything else at the end; emptied for each target start."""
        if self._redis is None:
            self._redis = Skip("redis-server not found (Debian: apt-get install redis-server)")
            if exe := find_tool("redis-server"):

                def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
                    return PROCS.start(self.cpus.pin(argv, "load"), log=log)

                try:
                    self._redis = profiles.RedisServer(exe, self.tmp / "redis", start)
                except profiles.RedisError as exc:
                    self._redis = Skip(str(exc))
        if isinstance(self._redis, Skip):
            raise self._redis
        self._redis.reset()
        return self._redis

    def launch(self, name: str, mode: str, port: int) -> Launch:
        base = self.upstream.base_url(mode)
        if name in PASSTHROUGH_MODULES:
            pypath = [str(BENCH)]
            if name == "bare-httpx-aiohttp":
                extra = ensure_httpx_aiohttp()
                if extra is not None:
                    pypath.append(str(extra))
            argv = [str(VENV_BIN / "granian"), "--interface", "asgi", "--workers", "1"]
            argv += ["--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--log-level", "warning", f"{PASSTHROUGH_MODULES[name]}:app"]
            env = clean_env(
                PYTHONPATH=os.pathsep.join(pypath), BENCH_UPSTREAM_URL=base + "/chat/completions"
            )
            return Launch(argv, env, BENCH, 30.0)
        if name in ("gateway", "gateway-httpx", "gateway-aiohttp", "gateway-2w"):
            workers = 2 if name.endswith("-2w") else 1
            argv, env = gateway_launch(port, workers, OPENAI_BASE_URL=base)
            if name in ("gateway-httpx", "gateway-aiohttp"):
                env["GATEWAY_UPSTREAM_TRANSPORT"] = name.removeprefix("gateway-")
            return Launch(argv, env, self.tmp, 60.0, pinned=workers == 1)
        if name in ("gateway-production", "gateway-production-2w"):
            workers = 2 if name.endswith("-2w") else 1
            redis = self.redis()
            cfg = self.tmp / f"production-{mode}.yaml"
            cfg.write_text(profiles.production_config(base, API_KEY))
            argv, env = gateway_launch(
                port, workers, OPENAI_BASE_URL=base, GATEWAY_CONFIG=str(cfg), REDIS_URL=redis.url
            )
            return Launch(
                argv,
                env,
                self.tmp,
                60.0,
                model=profiles.PRODUCTION_ALIAS,
                pinned=workers == 1,
                unique=True,
                expect={"x-gateway-cache": "MISS"},
                redis=redis,
                metrics_port=int(env["METRICS_PORT"]),
            )
        if name == "litellm":
            exe = ensure_litellm()
            self.litellm_version = package_version(LITELLM_VENV / "bin" / "python", "litellm")
            cfg = self.tmp / f"litellm-{mode}.yaml"
            cfg.write_text(
                "model_list:\n"
                "  - model_name: gpt-4o-mini\n"
                "    litellm_params:\n"
                "      model: openai/gpt-4o-mini\n"
                f"      api_base: {base}\n"
                f"      api_key: {API_KEY}\n"
                "litellm_settings:\n"
                "  telemetry: false\n"
                "  drop_params: true\n"
            )
            argv = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--num_workers", "1"]
            master = "sk-bench-" + secrets.token_hex(24)  # LiteLLM refuses to start without one
            env = clean_env(
                LITELLM_MASTER_KEY=master,
                LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price list at start
                LITELLM_LOG="ERROR",
                LITELLM_TELEMETRY="False",
            )
            return Launch(argv, env, self.tmp, 180.0, model="gpt-4o-mini", key=master)
        raise Skip(f"unknown target {name}")

    def body_file(self, model: str, mode: str, unique: bool = False) -> tuple[Path, bytes]:
        """The request body (a file for wrk, and its bytes); ``unique``: with the
        placeholder that post_unique.lua and ``vary`` replace per request."""
        say = "Say hello to the benchmark in one short sentence."
        req: dict[str, Any] = {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": f"{say} ({profiles.PLACEHOLDER})" if unique else say},
            ],
            "max_tokens": 64,
        }
        if mode == "stream":
            req["stream"] = True
            req["stream_options"] = {"include_usage": True}
        data = json.dumps(req, separators=(",", ":")).encode()
        tag = "-unique" if unique else ""
        path = self.tmp / f"body-{model.replace('/', '_')}-{mode}{tag}.json"
        path.write_bytes(data)
        return path, data

    def run_mode(self, name: str, mode: str, res: ModeResult) -> None:
        """Start ``name`` for ``mode``, measure it into ``res`` and stop it."""
        proc: subprocess.Popen[bytes] | None = None
        log = self.tmp / f"{name}-{mode}.log"
        try:
            if name == "upstream":
                port = self.upstream.port
                path = "/stream/v1/chat/completions" if mode == "stream" else "/v1/chat/completions"
                launch = Launch([], {}, BENCH, 0.0, model="gpt-4o-mini", path=path)
            else:
                port = free_port()
                launch = self.launch(name, mode, port)
                argv = self.cpus.pin(launch.argv, "server") if launch.pinned else launch.argv
                proc = PROCS.start(argv, env=launch.env, cwd=launch.cwd, log=log)
                t0 = time.monotonic()
                if not wait_ready(port, proc, launch.ready_timeout):
                    why = (
                        "exited"
                        if proc.poll() is not None
                        else f"no answer in {launch.ready_timeout:.0f} s"
                    )
                    res.status, res.note = "failed to start", f"{why}: {tail(log)}"
                    return
                print(
                    f"  {name} [{mode}] up in {time.monotonic() - t0:.1f} s on :{port}",
                    file=sys.stderr,
                )
            path, key = launch.path, launch.key
            body_path, body = self.body_file(launch.model, mode, launch.unique)
            url = f"http://127.0.0.1:{port}{path}"
            nonce = secrets.token_hex(6)

            def vary(i: int) -> bytes:  # the i-th request of the smoke check or the probe
                if not launch.unique:
                    return request_bytes(port, path, body, key)
                unique = body.replace(profiles.PLACEHOLDER.encode(), f"{nonce}-{i}".encode())
                return request_bytes(port, path, unique, key)

            if problem := smoke_check(port, vary(-1), mode, launch.expect):
                res.status, res.note = (
                    "bad response",
                    problem + (f" | log: {tail(log, 3)}" if proc else ""),
                )
                return
            top = max(self.args.concurrency)
            if self.args.warmup > 0:
                run_wrk(self.cpus, url, body_path, key, top, self.args.warmup, launch.unique)
            for c in self.args.concurrency:
                tree = profiles.process_tree(proc.pid) if proc and c == top else []
                cpu0 = profiles.cpu_seconds(tree)
                redis0 = profiles.redis_stats(launch.redis.port) if launch.redis and tree else {}
                cell = run_wrk(self.cpus, url, body_path, key, c, self.args.duration, launch.unique)
                if tree:
                    cell.cpu_s = profiles.cpu_seconds(tree) - cpu0
                if redis0 and launch.redis:
                    redis1 = profiles.redis_stats(launch.redis.port)
                    cell.redis = profiles.redis_delta(redis0, redis1)
                res.cells[c] = cell
                flag = f"  <-- {cell.problems()}" if cell.flagged else ""
                cost = ""
                if cell.cpu_us_per_req is not None:
                    cost = f", {cell.cpu_us_per_req:,.0f} CPU µs/req"
                if per := cell.redis_per_req():
                    cost += (
                        f", Redis {per['round trips']:.2f} round trips + "
                        f"{per['commands']:.1f} commands/req"
                    )
                print(
                    f"  {name} [{mode}] c={c}: {fmt_rps(cell.rps)} rps, "
                    f"p50 {fmt_ms(cell.p50_ms)} ms, p99 {fmt_ms(cell.p99_ms)} ms{cost}{flag}",
                    file=sys.stderr,
                )
            if mode == "stream" and self.args.probe_requests > 0:
                try:
                    samples = asyncio.run(ttfb_probe(port, vary, self.args.probe_requests, 60.0))
                except (OSError, TimeoutError, RuntimeError, asyncio.IncompleteReadError) as exc:
                    res.note = f"TTFB probe failed: {type(exc).__name__}: {exc}"
                    samples = []
                if samples:
                    res.ttfb_samples = len(samples)
                    res.ttfb_p50_ms = percentile(samples, 50) * 1e3
                    res.ttfb_p99_ms = percentile(samples, 99) * 1e3
                    print(
                        f"  {name} [{mode}] TTFB p50 {fmt_ms(res.ttfb_p50_ms)} ms, "
                        f"p99 {fmt_ms(res.ttfb_p99_ms)} ms ({len(samples)} requests)",
                        file=sys.stderr,
                    )
            if proc is not None:
                tree = profiles.process_tree(proc.pid)
                res.processes = len(tree)
                res.rss_mib = sum(profiles.rss_kib(pid) for pid in tree) / 1024
            if launch.metrics_port:
                try:
                    res.metrics = profiles.scrape(launch.metrics_port)
                except OSError as exc:
                    res.note = f"/metrics: {exc}"
                if bad := unexpected_metrics(res.metrics):
                    res.note = (res.note + "; " if res.note else "") + bad
                print(f"  {name} [{mode}] {fmt_metrics(res.metrics)}", file=sys.stderr)
            res.status = "ok"
        except Skip as exc:
            res.status, res.note = "skipped", str(exc)
        finally:
            if proc is not None:
                PROCS.stop(proc)


def fmt_metrics(metrics: dict[str, float]) -> str:
    """The non-zero counters (a family that counted nothing is not shown)."""
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(metrics.items()) if v) or "all zero"


def unexpected_metrics(metrics: dict[str, float]) -> str:
    """The production profile's every request is a cache miss, on a Redis that always
    answers, under limits that refuse nothing: anything else is named here."""
    bad = {
        k: v
        for k, v in metrics.items()
        if v and not k.startswith("llm_cache_requests_total{result=miss")
    }
    if not metrics.get("llm_cache_requests_total{result=miss}"):
        bad["no cache misses counted"] = 0
    return ("/metrics, expected only cache misses: " + fmt_metrics(bad)) if bad else ""


def percentile(values: list[float], pct: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def package_version(python: Path, dist: str) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# --------------------------------------------------------------------------- report


def fmt_rps(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def fmt_delta(v: float | None, ref: float | None) -> str:
    if v is None or ref is None:
        return "-"
    return f"{v - ref:+.3f}" if abs(v - ref) < 1 else f"{v - ref:+.2f}"


def machine_info(bench: Bench | None) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    for dist in ("granian", "httpx", "aiohttp", "uvloop", "httpx-aiohttp"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            dist_info = next(PYDEPS.glob(f"{dist.replace('-', '_')}-*.dist-info"), None)
            if dist_info is not None:
                info[dist] = dist_info.name.removesuffix(".dist-info").split("-")[1]
    if bench is not None:
        info["nginx"] = bench.upstream.version.replace("nginx version: nginx/", "")
        if bench.litellm_version:
            info["litellm"] = bench.litellm_version
        if isinstance(bench._redis, profiles.RedisServer):
            info["redis"] = bench._redis.version
    if wrk := find_tool("wrk"):
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False).stdout
        info["wrk"] = out.split(" [")[0].replace("wrk ", "").strip()
    git = ["git", "-C", str(ROOT)]
    with contextlib.suppress(OSError):
        rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "gateway", "_speedups"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        info["gateway commit"] = rev.stdout.strip() + (" + uncommitted changes" if dirty else "")
    return info


def report(
    results: list[TargetResult],
    args: argparse.Namespace,
    info: dict[str, str],
    cpus: Cpus,
    elapsed: float,
) -> str:
    conc = args.concurrency
    probe = (
        f"TTFB = time to first body byte of a streamed answer, raw-socket probe, c=1, "
        f"{args.probe_requests} requests"
        if args.probe_requests > 0
        else "TTFB probe off"
    )
    out: list[str] = [
        f"## End-to-end benchmark, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Command: `{args.command_line}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        f"Pinning: targets on CPU {cpus.server}; nginx (upstream), wrk and the TTFB probe on CPU "
        f"{cpus.load}. wrk -t1, {args.duration} s per cell after a {args.warmup} s warm-up; "
        f"rps = requests/s, p50/p99 = wrk latency in ms; {probe}. "
        f"Run took {elapsed / 60:.1f} min.",
    ]
    if args.rounds > 1:
        out += [
            "",
            f"Rounds: {args.rounds}, interleaved (every target and mode once per round, in "
            f"this order); each cell is the round with the median rps, whole (bench/rounds.py); "
            f"TTFB the median of the rounds' percentiles.",
        ]
    names = {r.name for r in results}
    if unpinned := [n for n in UNPINNED if n in names]:
        out += [
            "",
            f"Not pinned: {', '.join(f'`{n}`' for n in unpinned)}: two Granian workers free "
            f"on every CPU, sharing them with nginx and wrk (and, for the production profile, "
            f"Redis): whole-machine numbers, not one core's.",
        ]
    if names & PRODUCTION:
        out += [
            "",
            f"Production profile (`gateway-production*`): `REDIS_URL` to a redis-server started "
            f"by the bench (pinned with nginx and wrk, `--save '' --appendonly no`), a config "
            f"file with 4 aliases, the response cache on for `{profiles.PRODUCTION_ALIAS}` (2 "
            f"deployments, weighted), a key in `keys:` and RPM/TPM limits on the key, the alias "
            f"and both deployments, all too high to refuse anything; every request's body is "
            f"different (`bench/wrk/post_unique.lua`), so every request is a cache miss that "
            f"also writes the cache.",
        ]
    titles = {
        "json": "Non-streaming (canned chat.completion, ~580 B)",
        "stream": "Streaming (`stream: true`, canned SSE: 22 chunks + usage chunk + [DONE], ~6 KB)",
    }
    upstream = next((r for r in results if r.name == "upstream"), None)
    for mode in args.modes:
        out += ["", f"### {titles[mode]}", ""]
        cols = ["target"]
        for c in conc:
            cols += [f"c={c} rps", f"c={c} p50", f"c={c} p99"]
        if mode == "stream":
            cols += ["TTFB p50", "TTFB p99"]
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in results:
            m = r.modes.get(mode)
            if m is None:
                continue
            if not m.cells:
                out.append(f"| {r.name} | {m.status} |" + " |" * (len(cols) - 2))
                continue
            row = [r.name]
            for c in conc:
                cell = m.cells.get(c, Cell(c))
                warn = " ⚠" if cell.flagged else ""
                row += [fmt_rps(cell.rps) + warn, fmt_ms(cell.p50_ms), fmt_ms(cell.p99_ms)]
            if mode == "stream":
                row += [fmt_ms(m.ttfb_p50_ms), fmt_ms(m.ttfb_p99_ms)]
            out.append("| " + " | ".join(row) + " |")
    if upstream is not None and len(results) > 1:
        c1 = min(conc)
        out += ["", f"### Added latency vs upstream (ms, p50 at c={c1})", ""]
        cols = ["target"] + [f"{'non-stream' if m == 'json' else 'stream'} p50" for m in args.modes]
        if "stream" in args.modes:
            cols.append("stream TTFB p50")
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

        def p50(r: TargetResult, mode: str) -> float | None:
            m = r.modes.get(mode)
            cell = m.cells.get(c1) if m else None
            return cell.p50_ms if cell else None

        for r in results:
            if r.name == "upstream":
                continue
            row = [r.name] + [fmt_delta(p50(r, m), p50(upstream, m)) for m in args.modes]
            if "stream" in args.modes:
                us, them = upstream.modes.get("stream"), r.modes.get("stream")
                row.append(
                    fmt_delta(them.ttfb_p50_ms if them else None, us.ttfb_p50_ms if us else None)
                )
            out.append("| " + " | ".join(row) + " |")
    out += resource_report(results, args)
    notes = []
    for r in results:
        for mode, m in r.modes.items():
            if m.status != "ok" or m.note:
                notes.append(f"- {r.name} [{mode}]: {m.status}{': ' + m.note if m.note else ''}")
            for c, cell in m.cells.items():
                if cell.flagged:
                    notes.append(f"- ⚠ {r.name} [{mode}] c={c}: {cell.problems()}")
    if notes:
        out += ["", "### Problems", "", *notes]
    out += ["", "Targets: " + "; ".join(f"`{r.name}` = {r.description}" for r in results)]
    return "\n".join(out)


def resource_report(results: list[TargetResult], args: argparse.Namespace) -> list[str]:
    """CPU per request at the top concurrency, RSS after the run, Redis use."""
    top = max(args.concurrency)
    rows = [r for r in results if any(m.rss_mib is not None for m in r.modes.values())]
    if not rows:
        return []
    redis = any(c.redis for r in rows for m in r.modes.values() for c in m.cells.values())
    label = {"json": "non-stream", "stream": "stream"}
    cols = ["target"]
    for mode in args.modes:
        cols += [f"{label[mode]} CPU µs/req", f"{label[mode]} RSS MiB"]
        if redis:
            cols += [f"{label[mode]} Redis {x}" for x in ("round trips", "commands", "CPU µs")]
    out = [
        "",
        f"### Server cost (CPU time per request at c={top}, RSS after the run)",
        "",
        f"User + system CPU time of the target's whole process tree (supervisor and Granian "
        f"workers, all threads; /proc/PID/stat) over the c={top} cell, divided by the requests "
        f"wrk counted; RSS = sum of VmRSS over the tree after the mode's cells and probe. "
        f"Redis, per request over the same cell: round trips (`total_reads_processed`), "
        f"commands (`INFO commandstats`, those run inside Lua scripts included) and Redis's "
        f"own CPU time (it runs on the load CPU).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    details = []
    for r in rows:
        row = [r.name]
        for mode in args.modes:
            m = r.modes.get(mode) or ModeResult()
            cell = m.cells.get(top, Cell(top))
            cpu = cell.cpu_us_per_req
            row += ["-" if cpu is None else f"{cpu:,.0f}"]
            row += ["-" if m.rss_mib is None else f"{m.rss_mib:,.0f} ({m.processes} proc)"]
            if redis:
                per = cell.redis_per_req()
                row += [f"{per[k]:.2f}" if per else "-" for k in ("round trips", "commands")]
                row += [f"{per['cpu_us']:.0f}" if per else "-"]
                if per:
                    calls = ", ".join(f"{k} {v:.3f}" for k, v in list(per.items())[3:])
                    details.append(f"- {r.name} [{mode}] c={top}: {calls}")
        out.append("| " + " | ".join(row) + " |")
    if details:
        out += ["", "Redis commands per request, by command:", "", *details]
    return out


# --------------------------------------------------------------------------- main


def int_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, comma-separated")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk cell (default 10)")
    p.add_argument(
        "--warmup", type=int, default=2, help="seconds of wrk warm-up per target and mode"
    )
    p.add_argument("--concurrency", type=int_list, default=[1, 8, 32], help="default 1,8,32")
    p.add_argument(
        "--only", help="comma-separated targets: " + ", ".join([*TARGETS, *EXTRA_TARGETS])
    )
    p.add_argument("--modes", default="json,stream", help="json,stream (default both)")
    p.add_argument("--probe-requests", type=int, default=200, help="TTFB probe requests (0: skip)")
    p.add_argument("--server-cpu", type=int, help="CPU for the targets (default: first allowed)")
    p.add_argument("--load-cpu", type=int, help="CPU for nginx and wrk (default: second allowed)")
    p.add_argument("--json", type=Path, help="write raw numbers here")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every target and mode this many times, interleaved; each cell is the "
        "round with the median rps (bench/rounds.py; default 1)",
    )
    soak = p.add_argument_group("soak mode (bench/soak.py)")
    soak.add_argument(
        "--soak", action="store_true", help="RSS of one pinned gateway worker over a long mixed run"
    )
    soak.add_argument(
        "--soak-requests", type=int, default=200_000, help="mixed requests (default 200000)"
    )
    soak.add_argument(
        "--soak-warmup", type=int, default=20_000, help="requests before the first RSS reading"
    )
    soak.add_argument(
        "--soak-samples", type=int, default=10, help="RSS readings along the run (default 10)"
    )
    soak.add_argument(
        "--soak-concurrency", type=int, default=16, help="wrk connections (default 16)"
    )
    args = p.parse_args(argv)
    if args.soak and (args.soak_requests < 1 or args.soak_samples < 1 or args.soak_warmup < 0):
        p.error("--soak-requests and --soak-samples must be positive, --soak-warmup >= 0")
    known = {**TARGETS, **EXTRA_TARGETS}
    args.targets = [t.strip() for t in args.only.split(",")] if args.only else list(TARGETS)
    if bad := [t for t in args.targets if t not in known]:
        p.error(f"unknown target(s) {', '.join(bad)}; known: {', '.join(known)}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in args.modes if m not in MODES]:
        p.error(f"unknown mode(s) {', '.join(bad)}; known: {', '.join(MODES)}")
    args.concurrency = sorted(set(args.concurrency))
    if args.duration < 1:
        p.error("--duration must be at least 1 (wrk takes whole seconds)")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.command_line = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    return args


def choose_cpus(args: argparse.Namespace) -> Cpus:
    allowed = sorted(os.sched_getaffinity(0))
    if args.server_cpu is not None or args.load_cpu is not None:
        return Cpus(args.server_cpu, args.load_cpu)
    if len(allowed) < 2:
        print(
            "e2e: fewer than 2 CPUs: nothing is pinned, numbers mix server and load",
            file=sys.stderr,
        )
        return Cpus(None, None)
    return Cpus(allowed[0], allowed[1])


@contextlib.contextmanager
def signals_as_exit() -> Iterator[None]:
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.soak:
        # bench/soak.py imports this module as ``e2e``: the same one, not a second copy
        # with its own process list, when this file runs as __main__.
        sys.modules.setdefault("e2e", sys.modules[__name__])
        import soak

        return soak.main(args)
    started = time.monotonic()
    ensure_system_tools()
    WORK.mkdir(parents=True, exist_ok=True)
    cpus = choose_cpus(args)
    results: list[TargetResult] = []
    bench: Bench | None = None
    interrupted = False
    with signals_as_exit(), tempfile.TemporaryDirectory(prefix="llm-gateway-e2e-") as tmp:
        try:
            (Path(tmp) / "nginx").mkdir()
            bench = Bench(args, Path(tmp), cpus)
            print(f"e2e: upstream nginx on :{bench.upstream.port}; temp dir {tmp}", file=sys.stderr)
            if cpus.load is not None:  # the probe runs in this process
                os.sched_setaffinity(0, {cpus.load})
            by_name: dict[str, TargetResult] = {}
            runs: dict[tuple[str, str], list[ModeResult]] = {}
            skipped: set[str] = set()
            for rnd in range(args.rounds):
                for name in args.targets:
                    if name in skipped:
                        continue
                    result = by_name.get(name)
                    if result is None:
                        result = by_name[name] = TargetResult(
                            name, {**TARGETS, **EXTRA_TARGETS}[name]
                        )
                        results.append(result)
                    for mode in args.modes:
                        tag = f" (round {rnd + 1} of {args.rounds})" if args.rounds > 1 else ""
                        print(f"e2e: {name} [{mode}]{tag}", file=sys.stderr)
                        m = ModeResult(status="interrupted")
                        done = runs.setdefault((name, mode), [])
                        done.append(m)
                        result.modes[mode] = m
                        bench.run_mode(name, mode, m)
                        result.modes[mode] = rounds.merge(done)
                        if m.status != "ok":
                            print(f"  {name} [{mode}]: {m.status}: {m.note}", file=sys.stderr)
                        if m.status == "skipped":
                            skipped.add(name)
                            break
        except KeyboardInterrupt:
            interrupted = True
            print("\ne2e: interrupted; stopping everything", file=sys.stderr)
        finally:
            PROCS.stop_all()
        info = machine_info(bench)
    text = report(results, args, info, cpus, time.monotonic() - started)
    print(text)
    if args.json:
        payload = {
            "command": args.command_line,
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": info,
            "cpus": asdict(cpus),
            "duration_s": args.duration,
            "rounds": args.rounds,
            "interrupted": interrupted,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
