"""``llm-gateway serve | check-config [--no-env] FILE | version`` (also ``python -m gateway``).

Configuration errors print one line naming the field and exit with status 2;
values of secrets are never printed. ``serve`` checks everything before any worker
starts: the environment and the config file (``Settings.from_env``), then that no
other process listens on the port (see ``_hold_port``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence

from gateway import __version__
from gateway.config import ConfigError, load_config


def _fail(message: str) -> int:
    print(f"llm-gateway: error: {message}", file=sys.stderr)
    return 2


def _check_config(path: str, no_env: bool) -> int:
    """The file and this environment; with ``no_env``, the file alone (for CI, where
    the keys' variables are not set)."""
    from gateway.settings import Settings

    try:
        cfg = load_config(path, check_env=not no_env)
        if not no_env:
            Settings.from_env({**os.environ, "GATEWAY_CONFIG": path})
    except ConfigError as exc:
        return _fail(str(exc))
    deployments = sum(len(m.deployments) for m in cfg.models)
    print(f"{path}: ok ({len(cfg.models)} aliases, {deployments} deployments)")
    return 0


# Granian's own lines (start, workers, shutdown) as JSON like ours, so stdout stays
# one JSON object per line.
GRANIAN_LOGGING = {
    "formatters": {"json": {"()": "gateway.telemetry.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {
        "_granian": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "granian.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}


def _metrics_dir() -> str:
    """A fresh multiprocess directory, so every worker's values add up on one /metrics."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
        return path
    return tempfile.mkdtemp(prefix="llm-gateway-metrics-")


def _start_metrics_server(host: str, port: int) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    start_http_server(port, addr=host, registry=registry)


def _hold_port(host: str, port: int) -> socket.socket | None:
    """Refuse a port another process listens on, then hold it for this gateway.

    Granian binds each worker's listener with SO_REUSEPORT, so a second gateway on
    a busy port would start and silently share the traffic. A probe bound without
    SO_REUSEPORT (with SO_REUSEADDR, so connections in TIME_WAIT do not count)
    fails while anything listens there: ``OSError``. The socket returned stays
    bound, never listening, with SO_REUSEPORT alone, until this process exits: our
    own workers (SO_REUSEPORT, same user) can bind beside it, while the next
    gateway's probe fails even before our workers listen.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(addr)
    reuseport = getattr(socket, "SO_REUSEPORT", None)
    if reuseport is None:  # pragma: no cover - not Linux or BSD
        return None
    guard = socket.socket(family, socket.SOCK_STREAM)
    try:
        guard.setsockopt(socket.SOL_SOCKET, reuseport, 1)
        guard.bind(addr)
    except OSError:  # pragma: no cover - a race with another binder: the probe passed
        guard.close()
        return None
    return guard


def _serve(args: argparse.Namespace) -> int:
    if args.config:
        os.environ["GATEWAY_CONFIG"] = args.config
    if args.host:
        os.environ["SERVER_HOST"] = args.host
    if args.port:
        os.environ["SERVER_PORT"] = str(args.port)
    # Before anything imports prometheus_client: it picks single- or multi-process mode
    # once, at import, from this variable, and checking the config may import it (a
    # plugin's module that counts something). Forked workers inherit that choice.
    own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir()
    try:
        return _check_and_serve(args)
    finally:
        if own_dir:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _check_and_serve(args: argparse.Namespace) -> int:
    from gateway.settings import Settings

    try:
        settings = Settings.from_env()  # fail here, once, before any worker starts
    except ConfigError as exc:
        return _fail(str(exc))
    if settings.tracing is not None:
        from gateway.telemetry.tracing import check

        problem = check(settings.tracing)
        if problem is not None:
            return _fail(problem)
    # Checking the config may have made metrics here (a plugin's module defines some).
    # This process serves /metrics and records nothing: its gauges must not count among
    # the live workers' (a "livemin" gauge would read its 0).
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
    workers = settings.workers if args.workers is None else args.workers
    if workers < 1:
        return _fail("--workers: must be at least 1")
    try:
        guard = _hold_port(settings.server_host, settings.server_port)
    except OSError as exc:
        where = f"{settings.server_host}:{settings.server_port}"
        return _fail(f"SERVER_PORT: cannot listen on {where} ({exc.strerror or exc})")
    try:
        if settings.metrics_port:
            try:
                _start_metrics_server(settings.server_host, settings.metrics_port)
            except OSError as exc:
                return _fail(
                    f"METRICS_PORT: cannot listen on {settings.metrics_port} ({exc.strerror})"
                )

        from granian.constants import Interfaces, Loops

        from gateway.supervisor import Supervisor, load_app
        from gateway.telemetry.logging import configure

        configure(settings.log_level)  # the supervisor's own lines (drain, reload)
        Supervisor(
            "gateway.app:create_app",
            settings=settings,
            address=settings.server_host,
            port=settings.server_port,
            interface=Interfaces.ASGI,
            workers=workers,
            loop=Loops.uvloop,
            log_access=False,
            log_level=settings.log_level if settings.log_level != "critical" else "error",
            log_dictconfig=GRANIAN_LOGGING,
            backlog=2048,
            respawn_failed_workers=True,
            runtime_threads=settings.runtime_threads,
        ).serve(target_loader=load_app)
    finally:
        if guard is not None:
            guard.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llm-gateway", description="Fast OpenAI-compatible LLM gateway"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API (Granian)")
    serve.add_argument("--host", help="listen address (default $SERVER_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="listen port (default $SERVER_PORT or 8080)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes (default $GATEWAY_WORKERS, else the CPUs the container may use)",
    )
    serve.add_argument("--config", help="YAML config file (default $GATEWAY_CONFIG)")
    check = sub.add_parser("check-config", help="validate a YAML config file and exit")
    check.add_argument(
        "--no-env",
        action="store_true",
        help="check the file alone: variables it names (api_key_env) need not be set",
    )
    check.add_argument("file")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(__version__)
        return 0
    if args.command == "check-config":
        return _check_config(args.file, args.no_env)
    return _serve(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
