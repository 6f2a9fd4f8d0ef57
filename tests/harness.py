"""Process helpers for end-to-end tests: free ports, bounded waits, and subprocesses
(the fake upstream and real gateways) that are always killed, tests passing or not.

Every child is started in its own session, so stopping it signals its whole
process group (Granian's workers included) by the group id we own; nothing is
ever killed by name.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx

from _speedups import KERNELS, NO_EXTENSIONS
from gateway.telemetry.batch import FLUSH_S

if TYPE_CHECKING:
    import anthropic
    import openai

ROOT = Path(__file__).resolve().parent.parent
# What every gateway a test starts reports in /health and gateway_speedups_info: the
# compiled twin of every kernel (``make install`` builds them all), unless the run
# forces the pure twins (children inherit GATEWAY_NO_EXTENSIONS).
SPEEDUPS = dict.fromkeys(KERNELS, "py" if NO_EXTENSIONS else "c")
WAIT_S = 20.0
PROVIDER_KEY = "test-key"
# Variables a gateway reads; children start without any of them unless a test sets them.
_GATEWAY_VARS = (
    "SERVER_HOST",
    "SERVER_PORT",
    "METRICS_PORT",
    "LOG_LEVEL",
    "RUST_LOG",
    "REDIS_URL",
    "GATEWAY_CONFIG",
    "GATEWAY_MASTER_KEY",
    "GATEWAY_KEY_PEPPER",
    "GATEWAY_ADMIN",
    "GATEWAY_MAX_BODY_BYTES",
    "GATEWAY_UPSTREAM_TRANSPORT",
    "GATEWAY_UPSTREAM_POOL",
    "GATEWAY_RUNTIME_THREADS",
    "PROMETHEUS_MULTIPROC_DIR",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "AZURE_API_KEY",
    "AZURE_API_BASE",
    "AZURE_API_VERSION",
    "GOOGLE_API_KEY",
    "GOOGLE_BASE_URL",
)

_LIVE: list[Proc] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return free_port()


def clean_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment minus everything a gateway reads, plus ``extra``
    (a value of ``None`` removes a variable)."""
    env = {k: v for k, v in os.environ.items() if k not in _GATEWAY_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def wait_until(
    predicate: Callable[[], bool], timeout: float = WAIT_S, interval: float = 0.05
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Stops:
    """Something that runs until ``stop()``; as a context manager it is stopped on the
    way out whatever happened, so a fixture is ``with start_x(...) as x: yield x``."""

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class Proc:
    """A child process group with its output going to files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    stopped: bool = False
    started_at: float = field(default_factory=time.time)  # wall clock, as /health counts

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"{self.name} (pid {self.pid}, exit {self.popen.poll()})\n"
            f"--- stdout (tail) ---\n{self.stdout()[-3000:]}\n"
            f"--- stderr (tail) ---\n{self.stderr()[-3000:]}"
        )

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the group, then SIGKILL it if it has not exited within ``grace`` s.
        Idempotent: a group is signalled during the first call only."""
        if self.stopped:
            return self.popen.returncode
        self.stopped = True
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while its workers linger: always sweep the group.
        _signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)
        if self in _LIVE:
            _LIVE.remove(self)
        return self.popen.returncode


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the child if the test process dies without tearing down."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    out = log_dir / f"{name}.stdout"
    err = log_dir / f"{name}.stderr"
    with out.open("wb") as fo, err.open("wb") as fe:
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=fo,
            stderr=fe,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    proc = Proc(name, popen, out, err)
    _LIVE.append(proc)
    return proc


@atexit.register
def _kill_leftovers() -> None:  # a last resort if a fixture's teardown never ran
    for proc in list(_LIVE):
        proc.stop(grace=1.0)


def _http_ok(url: str, statuses: tuple[int, ...] = (200,)) -> bool:
    return httpx.get(url, timeout=1.0).status_code in statuses


# -- fake upstreams ----------------------------------------------------------------------


@dataclass
class Fake(Stops):
    """A fake upstream process (``tests/fakes/<module>.py``) and what it recorded."""

    proc: Proc
    port: int
    key: str = PROVIDER_KEY

    def stop(self) -> int | None:
        return self.proc.stop()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(self.root + "/_requests", timeout=5).json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.root + "/_reset", timeout=5).raise_for_status()


@dataclass
class FakeUpstream(Fake):
    """The OpenAI fake (``tests/fakes/openai_upstream.py``)."""

    @property
    def url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return self.root + "/v1"

    def streams(self) -> dict[str, int]:
        return httpx.get(self.root + "/_streams", timeout=5).json()  # type: ignore[no-any-return]

    def find(self, marker: str, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
        """Recorded requests to ``path`` whose JSON body mentions ``marker``."""
        return [
            r
            for r in self.requests()
            if r["path"] == path and marker in json.dumps(r["json"], ensure_ascii=False)
        ]

    def only(self, marker: str, path: str = "/v1/chat/completions") -> dict[str, Any]:
        found = self.find(marker, path)
        assert len(found) == 1, f"expected one upstream request with {marker!r}, got {found}"
        return found[0]


def start_fake(
    module: str,
    log_dir: Path,
    key: str = PROVIDER_KEY,
    *,
    ready_path: str = "/_requests",
    kind: type[Fake] = Fake,
) -> Fake:
    """``python -m tests.fakes.<module>`` on a free port; waits until ``ready_path``
    answers 200."""
    port = free_port()
    argv = [sys.executable, "-m", f"tests.fakes.{module}", "--port", str(port), "--key", key]
    proc = spawn(f"{module}-{port}", argv, clean_env(), log_dir)
    fake = kind(proc, port, key)
    if not wait_until(lambda: proc.alive() and _http_ok(fake.root + ready_path)):
        proc.stop()
        raise RuntimeError(f"{module} did not start:\n" + proc.describe())
    return fake


def start_fake_upstream(log_dir: Path, key: str = PROVIDER_KEY) -> FakeUpstream:
    fake = start_fake("openai_upstream", log_dir, key, ready_path="/_streams", kind=FakeUpstream)
    assert isinstance(fake, FakeUpstream)
    return fake


# -- gateways ---------------------------------------------------------------------------


@dataclass
class GatewayProc(Stops):
    proc: Proc
    port: int
    metrics_port: int
    env: dict[str, str] = field(repr=False)
    ready_at: float = 0.0  # wall clock: when its ready path first answered

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        """The OpenAI-compatible base URL clients use (``.../v1``)."""
        return self.url + "/v1"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> str:
        # Workers write metrics in batches every FLUSH_S: wait out the last one.
        time.sleep(FLUSH_S * 3)
        return httpx.get(self.metrics_url, timeout=5).text

    def openai(self, api_key: str = "anything", timeout: float = 10) -> openai.OpenAI:
        """An ``openai.OpenAI`` client of this gateway that never retries on its own."""
        import openai

        return openai.OpenAI(base_url=self.api, api_key=api_key, max_retries=0, timeout=timeout)

    def anthropic(self, api_key: str = "anything", timeout: float = 10) -> anthropic.Anthropic:
        """An ``anthropic.Anthropic`` client of this gateway's ``/v1/messages``."""
        import anthropic

        return anthropic.Anthropic(
            base_url=self.url, api_key=api_key, max_retries=0, timeout=timeout
        )

    def log_lines(self) -> list[str]:
        return self.proc.stdout().splitlines()

    def json_logs(self) -> list[dict[str, Any]]:
        """The stdout lines that are JSON objects."""
        out = []
        for line in self.log_lines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def access_lines(self, request_id: str | None = None) -> list[dict[str, Any]]:
        lines = [x for x in self.json_logs() if x.get("logger") == "access"]
        if request_id is not None:
            lines = [x for x in lines if x.get("request_id") == request_id]
        return lines

    def wait_for_access(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The access line for ``request_id`` (it is written after the response ends)."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = self.access_lines(request_id)
            return bool(found)

        assert wait_until(seen, timeout), f"no access line for {request_id}\n{self.proc.describe()}"
        return found[0]

    def stop(self) -> int | None:
        return self.proc.stop()


def gateway_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def start_gateway(
    log_dir: Path,
    env: Mapping[str, str | None],
    *,
    workers: int = 1,
    name: str = "gateway",
    ready_path: str = "/health/ready",
    ready_statuses: tuple[int, ...] = (200,),
) -> GatewayProc:
    """``python -m gateway serve`` on a free port; waits until ``ready_path`` answers."""
    port = free_port()
    metrics_port = free_port()
    full_env = clean_env({"METRICS_PORT": str(metrics_port), "LOG_LEVEL": "info", **env})
    argv = gateway_argv(
        "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)
    )
    proc = spawn(f"{name}-{port}", argv, full_env, log_dir)
    gw = GatewayProc(proc, port, metrics_port, full_env)
    if not wait_until(lambda: proc.alive() and _http_ok(gw.url + ready_path, ready_statuses)):
        proc.stop()
        raise RuntimeError(f"gateway did not become ready on {ready_path}:\n" + proc.describe())
    gw.ready_at = time.time()
    return gw


# -- metrics text -------------------------------------------------------------------------


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition as (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def metric_sum(text: str, name: str, **labels: str) -> float:
    return sum(
        v
        for n, ls, v in parse_metrics(text)
        if n == name and all(ls.get(k) == want for k, want in labels.items())
    )
