"""Process settings from the environment (ARCHITECTURE.md, "Environment").

``Settings.from_env()`` is the only place that reads ``os.environ``; everything
else receives a ``Settings``. It reads and validates every variable once, in
``llm-gateway serve`` before any worker starts, so a bad value stops the gateway
with one line naming the variable instead of crashing each worker later.
(``_speedups`` reads ``GATEWAY_NO_EXTENSIONS`` itself, being a leaf package;
its value is validated here too.) Secrets (provider keys, the master key) live
in ``Secret`` wrappers whose ``repr`` never shows the value.

A provider's ``*_BASE_URL`` (``AZURE_API_BASE``, ``AZURE_API_VERSION``) is where
its key goes: set without the key, it would be silently ignored and requests
would go to the public API, so it is refused.

Every key variable (the providers' keys, ``GATEWAY_MASTER_KEY`` and each variable
a config deployment names in ``api_key_env``) may instead be given as ``NAME_FILE``,
the path of a file holding the value, as Kubernetes and Docker mount secrets.
The files are read here, so a reload (``gateway/reload.py``) that calls
``from_env`` again picks up a rotated key. ``watched`` lists the files to poll.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Literal

import msgspec

from gateway.config import Config, ConfigError, base_url_problem, load_config

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Secret:
    """A value that never prints itself: repr, str and format all give ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        import hmac

        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def reveal(self) -> str:
        return self._value


class ProviderEnv(msgspec.Struct, frozen=True, kw_only=True, dict=False):
    """One provider enabled by its key variable (or by a config deployment)."""

    name: str
    api_key: Secret | None = None
    base_url: str
    api_version: str | None = None


DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "azure": "",
    "mock": "mock://local",
}
KEY_VARS: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "azure": "AZURE_API_KEY",
    "gemini": "GOOGLE_API_KEY",
}
MASTER_KEY_VAR = "GATEWAY_MASTER_KEY"
DEFAULT_TOTAL_TIMEOUT = 600  # config.Timeouts.total: the longest a stream may run
OTEL_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
BASE_URL_VARS: dict[str, str] = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "azure": "AZURE_API_BASE",
    "gemini": "GOOGLE_BASE_URL",
}


class Tracing(msgspec.Struct, frozen=True, kw_only=True):
    """OpenTelemetry, on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-only
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set (``telemetry/tracing.py``)."""

    endpoint: str  # the full OTLP/HTTP traces URL (.../v1/traces)
    service_name: str = "llm-gateway"
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    resource_attributes: dict[str, str] = {}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    server_host: str = "0.0.0.0"
    server_port: int = 8080
    metrics_port: int = 9090
    log_level: LogLevel = "info"
    redis_url: str | None = None
    config_path: str | None = None
    config_sha256: str | None = None  # of the config file's bytes: which config is live
    master_key: Secret | None = None
    key_pepper: Secret | None = None  # GATEWAY_KEY_PEPPER: virtual keys' HMAC key
    admin_api: bool = True  # GATEWAY_ADMIN=off: no /admin routes (virtual keys still work)
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = 64
    upstream_transport: Literal["h1", "aiohttp", "httpx"] = "h1"
    upstream_pool_size: int = 256
    gzip_min_bytes: int = 1024  # JSON answers this large are gzipped for clients that accept it
    cache_lock_ms: int = 30_000  # a cache fill's single-flight lock (pipeline/cache.py)
    cache_max_entry_bytes: int = 4 * 1024 * 1024  # larger answers are not stored
    cache_max_entries: int = 10_000  # in-process cache store
    cache_max_bytes: int = 64 * 1024 * 1024  # in-process cache store
    workers: int = 1  # Granian worker processes (default: the CPUs the cgroup allows)
    # Granian's Rust runtime threads per worker. Two, not Granian's one: each ASGI send
    # waits for a runtime thread to take the message, and with one it is often busy
    # (bench/README.md: sends cost half, +3-16 % requests/s on one core)
    runtime_threads: int = 2
    drain_s: int = DEFAULT_TOTAL_TIMEOUT  # after the listener closes, in-flight may finish
    prestop_s: int = 5  # readiness 503 before the listener closes
    reload_poll_s: int = 10  # config and secret files polled for changes (0: SIGHUP only)
    tracing: Tracing | None = None
    watched: tuple[str, ...] = ()  # files a reload re-reads: the config, every NAME_FILE
    providers: dict[str, ProviderEnv] = {}
    config: Config = Config()
    environ: dict[str, str] = {}  # the variables config deployments may name (api_key_env)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        config_path = env.get("GATEWAY_CONFIG") or None
        names = [*KEY_VARS.values(), MASTER_KEY_VAR]
        config_sha256 = None
        if config_path:
            config_sha256 = _file_sha256(config_path)
            # the variables its deployments name may come from files too
            named = load_config(config_path, environ=env, check_env=False)
            names += [d.api_key_env for m in named.models for d in m.deployments if d.api_key_env]
        secret_files = _read_secret_files(env, names)
        config = load_config(config_path, environ=env) if config_path else Config()
        level_var = "LOG_LEVEL" if env.get("LOG_LEVEL") else "RUST_LOG"
        level = (env.get("LOG_LEVEL") or _rust_log_level(env.get("RUST_LOG")) or "info").lower()
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(
                f"{level_var}: unknown level {level[:20]!r} (debug|info|warning|error)"
            )
        transport = env.get("GATEWAY_UPSTREAM_TRANSPORT", "h1")
        if transport not in ("h1", "aiohttp", "httpx"):
            raise ConfigError("GATEWAY_UPSTREAM_TRANSPORT: expected h1, aiohttp or httpx")
        redis_url = env.get("REDIS_URL") or None
        if redis_url and not redis_url.startswith(
            ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        ):
            raise ConfigError(
                "REDIS_URL: expected a redis://, rediss://, unix:// or redis+cluster:// URL"
            )
        master = env.get("GATEWAY_MASTER_KEY") or None
        pepper = env.get("GATEWAY_KEY_PEPPER") or None
        if pepper is not None and len(pepper) < 16:
            raise ConfigError("GATEWAY_KEY_PEPPER: at least 16 characters (a random secret)")
        admin = env.get("GATEWAY_ADMIN", "on").strip().lower()
        if admin not in ("on", "off"):
            raise ConfigError("GATEWAY_ADMIN: expected on or off")
        no_ext = env.get("GATEWAY_NO_EXTENSIONS", "").strip().lower()
        if no_ext not in ("", "0", "false", "no", "1", "true", "yes"):
            raise ConfigError("GATEWAY_NO_EXTENSIONS: expected 1, true or yes (or 0, false, no)")
        return cls(
            server_host=env.get("SERVER_HOST", "0.0.0.0"),
            server_port=_int(env, "SERVER_PORT", 8080, 1, 65535),
            metrics_port=_int(env, "METRICS_PORT", 9090, 0, 65535),
            log_level=level,  # type: ignore[arg-type]
            redis_url=redis_url,
            config_path=config_path,
            master_key=Secret(master) if master else None,
            key_pepper=Secret(pepper) if pepper else None,
            admin_api=admin == "on",
            max_body_bytes=_int(env, "GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024, 1024, 1 << 31),
            upstream_transport=transport,  # type: ignore[arg-type]
            upstream_pool_size=_int(env, "GATEWAY_UPSTREAM_POOL", 256, 32, 100_000),
            gzip_min_bytes=_int(env, "GATEWAY_GZIP_MIN_BYTES", 1024, 0, 1 << 30),
            cache_lock_ms=_int(env, "GATEWAY_CACHE_LOCK_MS", 30_000, 100, 600_000),
            cache_max_entry_bytes=_int(
                env, "GATEWAY_CACHE_MAX_ENTRY_BYTES", 4 * 1024 * 1024, 1024, 512 * 1024 * 1024
            ),
            cache_max_entries=_int(env, "GATEWAY_CACHE_MAX_ENTRIES", 10_000, 1, 10_000_000),
            cache_max_bytes=_int(env, "GATEWAY_CACHE_MAX_BYTES", 64 * 1024 * 1024, 1024, 1 << 40),
            workers=_int(env, "GATEWAY_WORKERS", available_cpus(), 1, 1024),
            runtime_threads=_int(env, "GATEWAY_RUNTIME_THREADS", 2, 1, 64),
            drain_s=_int(env, "GATEWAY_DRAIN_SECONDS", _longest_total(config), 0, 86_400),
            prestop_s=_int(env, "GATEWAY_PRESTOP_SECONDS", 5, 0, 3600),
            reload_poll_s=_int(env, "GATEWAY_RELOAD_POLL_SECONDS", 10, 0, 86_400),
            tracing=_tracing(env),
            config_sha256=config_sha256,
            watched=tuple(p for p in (config_path, *secret_files) if p),
            providers=_providers(env, config),
            config=config,
            environ={k: v for k, v in env.items() if k.isupper()},
        )

    def __repr__(self) -> str:
        # ``environ`` holds the values of key variables (and of NAME_FILE files): never shown
        shown = {k: v for k, v in msgspec.structs.asdict(self).items() if k != "environ"}
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def secret_env(self, name: str) -> Secret | None:
        value = self.environ.get(name)
        return Secret(value) if value else None


def _read_secret_files(env: dict[str, str], names: list[str]) -> list[str]:
    """``NAME_FILE`` -> ``env[NAME]`` for each key variable ``NAME``; the files read.
    The value is the file's text without surrounding whitespace (a trailing newline
    from ``echo key > file`` is not part of a key). Errors name the variable and the
    path, never a value."""
    files = []
    for name in dict.fromkeys(names):
        path = env.get(f"{name}_FILE")
        if not path:
            continue
        if env.get(name):
            raise ConfigError(f"{name}_FILE: {name} is set too; set one of them")
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path} ({type(exc).__name__})") from None
        if not value:
            raise ConfigError(f"{name}_FILE: {path} is empty")
        env[name] = value
        files.append(path)
    return files


def _file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None  # load_config names the problem


def _longest_total(config: Config) -> int:
    """GATEWAY_DRAIN_SECONDS's default: the longest a configured stream may run."""
    totals = [d.timeout.total for m in config.models for d in m.deployments]
    return int(max([DEFAULT_TOTAL_TIMEOUT, *totals]) + 0.999)


def _tracing(env: Mapping[str, str]) -> Tracing | None:
    """The standard OpenTelemetry variables; None (tracing off) without an endpoint."""
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or not (traces or base):
        return None
    endpoint = traces or f"{(base or '').rstrip('/')}/v1/traces"
    if not endpoint.startswith(("http://", "https://")):
        var = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" if traces else "OTEL_EXPORTER_OTLP_ENDPOINT"
        raise ConfigError(f"{var}: expected an http:// or https:// URL (OTLP/HTTP)")
    sampler = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
    if sampler not in OTEL_SAMPLERS:
        raise ConfigError(f"OTEL_TRACES_SAMPLER: expected one of {', '.join(OTEL_SAMPLERS)}")
    raw_arg = env.get("OTEL_TRACES_SAMPLER_ARG") or "1.0"
    try:
        arg = float(raw_arg)
    except ValueError:
        arg = -1.0
    if "ratio" in sampler and not 0.0 <= arg <= 1.0:
        raise ConfigError("OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1")
    resource: dict[str, str] = {}
    for item in (env.get("OTEL_RESOURCE_ATTRIBUTES") or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            resource[key.strip()] = value.strip()
    return Tracing(
        endpoint=endpoint,
        service_name=env.get("OTEL_SERVICE_NAME") or resource.get("service.name", "llm-gateway"),
        sampler=sampler,
        sampler_arg=arg,
        resource_attributes=resource,
    )


def _providers(env: Mapping[str, str], config: Config) -> dict[str, ProviderEnv]:
    """Providers enabled by a key variable; ``mock`` when no real provider is."""
    out: dict[str, ProviderEnv] = {}
    for name, var in KEY_VARS.items():
        key = env.get(var)
        if not key:
            for companion in (BASE_URL_VARS[name], "AZURE_API_VERSION" if name == "azure" else ""):
                if companion and env.get(companion):
                    raise ConfigError(
                        f"{companion}: set without {var}, which it goes with (unset, requests "
                        "would silently go elsewhere); set both, or give config deployments "
                        "their own base_url and api_key_env"
                    )
            continue
        base = env.get(BASE_URL_VARS[name]) or DEFAULT_BASE_URLS[name]
        if name == "azure" and not base:
            raise ConfigError("AZURE_API_BASE: required when AZURE_API_KEY is set")
        problem = base_url_problem(base)
        if problem is not None:
            raise ConfigError(f"{BASE_URL_VARS[name]}: {problem}")
        out[name] = ProviderEnv(
            name=name,
            api_key=Secret(key),
            base_url=base.rstrip("/"),
            api_version=env.get("AZURE_API_VERSION") if name == "azure" else None,
        )
    uses_mock = any(d.provider == "mock" for m in config.models for d in m.deployments)
    if not out or uses_mock:
        out["mock"] = ProviderEnv(name="mock", base_url=DEFAULT_BASE_URLS["mock"])
    return out


def available_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """GATEWAY_WORKERS's default: the CPUs this process may use. A container's CPU
    limit is a cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), not the
    host's core count that ``os.cpu_count()`` reports; rounded down (a worker on
    half a CPU would be throttled), at least 1, at most the CPUs it may run on."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota: float | None = None
    try:
        with open(f"{cgroup}/cpu.max") as f:
            q, period = [*f.read().split(), "100000"][:2]
        if q != "max":
            quota = int(q) / int(period)
    except (OSError, ValueError):
        try:
            with open(f"{cgroup}/cpu/cpu.cfs_quota_us") as f:
                q_us = int(f.read())
            with open(f"{cgroup}/cpu/cpu.cfs_period_us") as f:
                period_us = int(f.read())
            if q_us > 0 and period_us > 0:
                quota = q_us / period_us
        except (OSError, ValueError):
            pass
    n = cpus or 1
    if quota is not None:
        n = min(n, int(quota))
    return max(1, n)


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: must be between {lo} and {hi}, got {value}")
    return value


def _rust_log_level(value: str | None) -> str | None:
    """Accept RUST_LOG's simplest forms (``info``, ``gateway=debug``) as LOG_LEVEL."""
    if not value:
        return None
    level = value.split(",")[0].split("=")[-1].strip().lower()
    return {"warn": "warning", "trace": "debug"}.get(level, level)
