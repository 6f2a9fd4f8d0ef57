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
"""

from __future__ import annotations

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
BASE_URL_VARS: dict[str, str] = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "azure": "AZURE_API_BASE",
    "gemini": "GOOGLE_BASE_URL",
}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    server_host: str = "0.0.0.0"
    server_port: int = 8080
    metrics_port: int = 9090
    log_level: LogLevel = "info"
    redis_url: str | None = None
    config_path: str | None = None
    master_key: Secret | None = None
    key_pepper: Secret | None = None  # GATEWAY_KEY_PEPPER: virtual keys' HMAC key
    admin_api: bool = True  # GATEWAY_ADMIN=off: no /admin routes (virtual keys still work)
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = 64
    upstream_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    upstream_pool_size: int = 256
    cache_lock_ms: int = 30_000  # a cache fill's single-flight lock (pipeline/cache.py)
    cache_max_entry_bytes: int = 4 * 1024 * 1024  # larger answers are not stored
    cache_max_entries: int = 10_000  # in-process cache store
    cache_max_bytes: int = 64 * 1024 * 1024  # in-process cache store
    providers: dict[str, ProviderEnv] = {}
    config: Config = Config()
    environ: dict[str, str] = {}  # the variables config deployments may name (api_key_env)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        config_path = env.get("GATEWAY_CONFIG") or None
        config = load_config(config_path, environ=env) if config_path else Config()
        level_var = "LOG_LEVEL" if env.get("LOG_LEVEL") else "RUST_LOG"
        level = (env.get("LOG_LEVEL") or _rust_log_level(env.get("RUST_LOG")) or "info").lower()
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(
                f"{level_var}: unknown level {level[:20]!r} (debug|info|warning|error)"
            )
        transport = env.get("GATEWAY_UPSTREAM_TRANSPORT", "aiohttp")
        if transport not in ("aiohttp", "httpx"):
            raise ConfigError("GATEWAY_UPSTREAM_TRANSPORT: expected aiohttp or httpx")
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
            cache_lock_ms=_int(env, "GATEWAY_CACHE_LOCK_MS", 30_000, 100, 600_000),
            cache_max_entry_bytes=_int(
                env, "GATEWAY_CACHE_MAX_ENTRY_BYTES", 4 * 1024 * 1024, 1024, 512 * 1024 * 1024
            ),
            cache_max_entries=_int(env, "GATEWAY_CACHE_MAX_ENTRIES", 10_000, 1, 10_000_000),
            cache_max_bytes=_int(env, "GATEWAY_CACHE_MAX_BYTES", 64 * 1024 * 1024, 1024, 1 << 40),
            providers=_providers(env, config),
            config=config,
            environ={k: v for k, v in env.items() if k.isupper()},
        )

    def secret_env(self, name: str) -> Secret | None:
        value = self.environ.get(name)
        return Secret(value) if value else None


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
