"""``llm-gateway serve``'s supervisor: Granian's multiprocess server with the gateway's
graceful drain and its reload.

Granian 2.x (``granian/server/common.py``, ``mp.py``), as built: the supervisor
process owns the workers and the signals. SIGINT or SIGTERM ends its serve loop;
``shutdown()`` then SIGTERMs each worker and joins it (forever, unless
``workers_kill_timeout`` is set, after which it SIGKILLs). In a worker, SIGINT and
SIGTERM set a ``WorkerSignal``: the Rust server stops accepting at once (the
listener closes; new connections are refused), closes idle keep-alive connections,
waits for every connection with a request in flight, with no deadline, and only
then lets the worker's loop finish, run the ASGI lifespan's shutdown and exit.
SIGHUP to the supervisor respawns every worker: a new one is started, then the old
one is terminated, whatever became of the new one, so a new worker that cannot
start (a bad config) leaves no worker, the crash-loop guard trips and the whole
gateway exits. Workers do not handle SIGHUP (its default action kills them).

What this class changes, by overriding the supervisor's signal handlers and its
worker stop (the workers keep Granian's own handlers):

* **First SIGTERM/SIGINT.** Each worker gets SIGUSR1 (``gateway/drain.py``:
  ``/health/ready`` answers 503) while the listeners still accept; after
  ``GATEWAY_PRESTOP_SECONDS`` Granian's stop SIGTERMs them (listeners close;
  in-flight requests and streams go on); after ``GATEWAY_DRAIN_SECONDS`` more, the
  workers still running get SIGUSR2: what is left ends with a 503 or the stream's
  error event and is settled, then they exit. The supervisor exits 0. A worker
  that is still alive ``KILL_AFTER_S`` after that is killed.
* **A second SIGTERM/SIGINT**, at any point: SIGUSR2 at once (and the pre-stop
  delay is cut short); the gateway exits within moments.
* **SIGHUP, or a watched file that changed** (the config file, every
  ``NAME_FILE`` secret; polled every ``GATEWAY_RELOAD_POLL_SECONDS``): the
  supervisor re-reads the environment and the files (``Settings.from_env``). A bad
  result is refused with one log line and nothing else happens: the workers keep
  serving the old config. A good one is logged with the config's new hash and each
  worker gets SIGHUP, on which it rebuilds its config-derived state in place
  (``gateway/reload.py``): no worker restarts, no request is dropped.

When the signal reaches the whole process group (Ctrl-C in a terminal; a test
harness's ``killpg``), the workers' own SIGTERM/SIGINT handler closes their
listeners at once: there is no pre-stop phase then, but the drain's deadline and
the second signal work the same. Kubernetes and Docker signal the container's
PID 1 only, which is this supervisor.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from granian.server import MPServer

from gateway.config import ConfigError
from gateway.settings import Settings

__all__ = ["Supervisor", "load_app"]

log = logging.getLogger("gateway.supervisor")

KILL_AFTER_S = 10.0  # after SIGUSR2, a worker that has not exited is killed
DRAIN_BEGIN = signal.SIGUSR1
STOP_NOW = signal.SIGUSR2


def load_app(target: str) -> Any:
    """Granian's target loader in each worker: the app, with the worker's signal
    handlers for drain and reload (``create_app(supervised=True)``)."""
    from gateway.app import create_app

    return create_app(supervised=True)


def fingerprint(paths: tuple[str, ...]) -> dict[str, str]:
    """Each watched file's content digest (kept in memory, never logged: secrets)."""
    out = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                out[path] = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            out[path] = ""
    return out


class Supervisor(MPServer):
    def __init__(self, target: str, *, settings: Settings, **kw: Any) -> None:
        kw["workers_kill_timeout"] = None  # ours: _stop_workers below
        super().__init__(target, **kw)
        self.settings = settings
        self._signals = 0
        self._now = threading.Event()  # a second signal: stop without waiting
        self._reload_asked = threading.Event()
        self._stopping = threading.Event()

    # -- signals (the main thread, between Granian's waits) -----------------------------

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        # Flags and signals only: the main thread logs (a handler may interrupt a log call)
        self._signals += 1
        if self._signals == 1:
            for wrk in self.wrks:  # our stop, not a crash: no respawn, exit status 0
                wrk.interrupt_by_parent = True
            self._signal_workers(DRAIN_BEGIN)
            super().signal_handler_interrupt()
        else:
            self._now.set()
            self._signal_workers(STOP_NOW)

    def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
        self._reload_asked.set()  # the reloader thread does the work, off the signal handler

    def _signal_workers(self, sig: int) -> None:
        for wrk in list(self.wrks):
            pid = wrk.inner.pid
            if pid is not None and wrk.is_alive():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    # -- start and stop -------------------------------------------------------------------

    def startup(self, spawn_target: Any, target_loader: Any) -> None:
        super().startup(spawn_target, target_loader)
        threading.Thread(target=self._reloader, name="gateway-reloader", daemon=True).start()

    def shutdown(self, exit_code: int = 0) -> None:
        self._stopping.set()
        self._reload_asked.set()
        if self.interrupt_signal:  # a signal, not a crash loop: readiness 503 first
            s = self.settings
            fields = {"prestop_s": s.prestop_s, "drain_s": s.drain_s}
            log.info("shutting down: draining", extra={"fields": fields})
            # Workers that got the signal too (a process group) closed their listeners
            # already, and exit once idle: nothing is left to wait for then.
            deadline = time.monotonic() + s.prestop_s
            while time.monotonic() < deadline and self._alive() and not self._now.is_set():
                self._now.wait(0.05)
        super().shutdown(exit_code)

    def _stop_workers(self) -> None:
        """SIGTERM (listeners close), wait up to the drain period, SIGUSR2 (end what is
        left), wait ``KILL_AFTER_S``, SIGKILL."""
        for wrk in self.wrks:
            wrk.terminate()
        if self._now.is_set():
            self._signal_workers(STOP_NOW)  # again: requests may have come in meanwhile
        self._join(self.settings.drain_s, stop_early=self._now)
        if self._alive():
            self._signal_workers(STOP_NOW)
            self._join(KILL_AFTER_S)
        for wrk in self.wrks:
            if wrk.is_alive():
                log.error("worker did not stop: killed", extra={"fields": {"pid": wrk._id()}})
                wrk.kill()
                wrk.join()
        self._forget_workers()
        self.wrks.clear()

    def _alive(self) -> bool:
        return any(wrk.is_alive() for wrk in self.wrks)

    def _join(self, seconds: float, stop_early: threading.Event | None = None) -> None:
        deadline = time.monotonic() + seconds
        while self._alive() and time.monotonic() < deadline:
            if stop_early is not None and stop_early.is_set():
                log.warning("second signal: ending what is in flight now")
                return
            for wrk in self.wrks:
                wrk.join(0.05)

    def _forget_workers(self) -> None:
        """Live gauges (memory, open connections) of exited workers leave /metrics."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return
        from prometheus_client import multiprocess

        for wrk in self.wrks:
            pid = wrk._id()
            if pid is not None:
                multiprocess.mark_process_dead(pid)

    # -- reload ---------------------------------------------------------------------------

    def _reloader(self) -> None:
        """SIGHUP, or a change of a watched file: check, then tell the workers."""
        known = fingerprint(self.settings.watched)
        while not self._stopping.is_set():
            poll = self.settings.reload_poll_s or None
            asked = self._reload_asked.wait(poll)
            self._reload_asked.clear()
            if self._stopping.is_set():
                return
            now = fingerprint(self.settings.watched)
            if not asked and now == known:
                continue
            changed = sorted(p for p in set(now) | set(known) if now.get(p) != known.get(p))
            known = now  # a refused change is not retried until the files change again
            if self.reload(changed, Settings.from_env):
                known = fingerprint(self.settings.watched)  # the list may have changed

    def reload(self, changed: list[str], load: Callable[[], Settings]) -> bool:
        try:
            settings = load()
        except ConfigError as exc:
            log.error(
                "config reload refused: the running config stays",
                extra={"fields": {"error": str(exc), "config_path": self.settings.config_path}},
            )
            return False
        self.settings = settings
        log.info(
            "config reloaded",
            extra={
                "fields": {
                    "config_path": settings.config_path,
                    "config_sha256": settings.config_sha256,
                    "changed": changed,
                }
            },
        )
        self._signal_workers(signal.SIGHUP)
        return True
