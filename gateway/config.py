"""The YAML configuration file (``GATEWAY_CONFIG``): model aliases and their deployments.

Validated with msgspec: unknown keys are errors, and every error is one line
naming the field (``models[0].deployments[1].weight: ...``). API keys are never
in the file: a deployment names the environment variable that holds its key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Provider = Literal["openai", "azure", "anthropic", "gemini", "mock"]
PROVIDERS: tuple[str, ...] = ("openai", "azure", "anthropic", "gemini", "mock")
Strategy = Literal["weighted", "least-latency", "lowest-cost", "least-busy", "priority"]

PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegInt = Annotated[int, Meta(ge=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]


class ConfigError(ValueError):
    """A bad configuration value; ``str()`` is one line naming the field and the problem."""


class _Base(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class Timeouts(_Base):
    connect: PositiveFloat = 5.0
    first_token: PositiveFloat | None = None  # per attempt; default: the read timeout
    idle: PositiveFloat | None = None  # between stream events; default: the read timeout
    read: PositiveFloat | None = None  # default per provider (60 s; Anthropic 300 s)
    total: PositiveFloat = 600.0


class Limits(_Base):
    rpm: Annotated[int, Meta(ge=1)] | None = None
    tpm: Annotated[int, Meta(ge=1)] | None = None


class Price(_Base):
    """USD per million tokens."""

    input: NonNegFloat = 0.0
    cached_input: NonNegFloat | None = None
    output: NonNegFloat = 0.0


class MockOptions(_Base):
    """Behaviour of the ``mock`` provider: latency before the first token and pacing."""

    latency_ms: NonNegFloat = 0.0
    tokens_per_second: NonNegFloat = 0.0  # 0 = as fast as possible
    reply_tokens: Annotated[int, Meta(ge=1, le=100_000)] = 16


class Deployment(_Base):
    provider: Provider
    model: Annotated[str, Meta(min_length=1)]
    base_url: str | None = None
    api_key_env: str | None = None
    api_version: str | None = None  # Azure dated API
    weight: NonNegFloat = 1.0
    priority: NonNegInt = 0
    timeout: Timeouts = Timeouts()
    limits: Limits | None = None
    price: Price | None = None
    mock: MockOptions | None = None


class CacheOptions(_Base):
    ttl: Annotated[int, Meta(ge=1)]


class ModelAlias(_Base):
    alias: Annotated[str, Meta(min_length=1)]
    deployments: Annotated[list[Deployment], Meta(min_length=1)]
    strategy: Strategy = "weighted"
    fallbacks: list[str] = []
    limits: Limits | None = None
    cache: CacheOptions | None = None


class GlobalLimits(_Base):
    default_key: Limits | None = None
    on_redis_error: Literal["open", "closed"] = "open"


class Config(_Base):
    models: list[ModelAlias] = []
    limits: GlobalLimits = GlobalLimits()


_PATH = re.compile(r"\s*-\s*at\s*`\$(.*)`$")


def _field_path(msg: str) -> tuple[str, str]:
    """Split msgspec's "Expected int - at `$.a[0].b`" into ("a[0].b", "Expected int")."""
    m = _PATH.search(msg)
    if not m:
        return "", msg
    return m.group(1).lstrip("."), msg[: m.start()]


def parse_config(data: object, *, environ: Mapping[str, str] | None = None) -> Config:
    """Validate decoded YAML; raise ConfigError naming the first bad field."""
    if data is None:
        data = {}
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        path, problem = _field_path(str(exc))
        raise ConfigError(f"{path or '<root>'}: {problem}") from None
    _check_semantics(cfg, os.environ if environ is None else environ)
    return cfg


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate a YAML config file."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read ({type(exc).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed document"
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p}: <root>: expected a mapping, got {type(data).__name__}")
    try:
        return parse_config(data, environ=environ)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def _check_semantics(cfg: Config, environ: Mapping[str, str]) -> None:
    aliases: dict[str, int] = {}
    for i, m in enumerate(cfg.models):
        where = f"models[{i}]"
        if m.alias in aliases:
            raise ConfigError(f"{where}.alias: duplicate alias {m.alias!r}")
        if "/" in m.alias:
            raise ConfigError(f"{where}.alias: must not contain '/' (reserved for provider/model)")
        aliases[m.alias] = i
        if all(d.weight == 0 for d in m.deployments) and m.strategy == "weighted":
            raise ConfigError(f"{where}.deployments: at least one weight must be positive")
        for j, d in enumerate(m.deployments):
            dwhere = f"{where}.deployments[{j}]"
            if d.base_url is not None and not re.match(r"^https?://[^/\s]+", d.base_url):
                raise ConfigError(f"{dwhere}.base_url: must be an http:// or https:// URL")
            if d.api_key_env is not None:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", d.api_key_env):
                    raise ConfigError(f"{dwhere}.api_key_env: not a valid variable name")
                if not environ.get(d.api_key_env):
                    # Name the variable only if it looks like a name: a key pasted here
                    # by mistake must not be printed.
                    shown = d.api_key_env if _looks_like_name(d.api_key_env) else "(hidden)"
                    raise ConfigError(
                        f"{dwhere}.api_key_env: environment variable {shown} is not set"
                        + ("" if shown != "(hidden)" else "; api_key_env takes a variable's name")
                    )
            if d.mock is not None and d.provider != "mock":
                raise ConfigError(f"{dwhere}.mock: only valid with provider: mock")
            if d.provider == "azure" and d.base_url is None and not environ.get("AZURE_API_BASE"):
                raise ConfigError(f"{dwhere}.base_url: required for azure (or set AZURE_API_BASE)")
    for i, m in enumerate(cfg.models):
        for k, fb in enumerate(m.fallbacks):
            if fb not in aliases:
                raise ConfigError(f"models[{i}].fallbacks[{k}]: unknown alias {fb!r}")
    _check_fallback_cycles(cfg)


def _looks_like_name(value: str) -> bool:
    """OPENAI_API_KEY yes; a hex or base64 secret no."""
    return (
        bool(re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", value))
        and ("_" in value or len(value) <= 12)
        and not re.search(r"[0-9]{5}", value)
    )


def _check_fallback_cycles(cfg: Config) -> None:
    graph = {m.alias: m.fallbacks for m in cfg.models}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = " -> ".join([*path[path.index(nxt) :], nxt])
                i = list(graph).index(path[-1])
                raise ConfigError(f"models[{i}].fallbacks: fallback cycle {cycle}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for alias in graph:
        if alias not in state:
            visit(alias, [alias])
