"""The YAML configuration file (``GATEWAY_CONFIG``): model aliases and their deployments.

Validated with msgspec: unknown keys are errors, and every error is one line
naming the field (``models[0].deployments[1].weight: ...``). API keys are never
in the file: a deployment names the environment variable that holds its key, and
a ``base_url`` with credentials in it (``https://user:pw@host``) is refused.
``check_env=False`` checks the file alone (``llm-gateway check-config --no-env``,
for CI): variables named by ``api_key_env`` need not be set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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


# A stream's first content within this, or the attempt moves to another deployment
# (or the fallbacks). A chat model's first token usually comes within a few seconds,
# a prompt of 100k+ tokens under load within 10-15 s; 20 s flags a hung upstream
# without cutting those, early enough that a fallback still fits inside the 60-120 s
# timeouts many clients use: a hung primary, a second hung deployment and a working
# fallback answer within about 45 s. Reasoning models that think before they stream
# (o1/o3, extended thinking) need it raised per deployment.
DEFAULT_FIRST_TOKEN = 20.0
# The whole request, every attempt, wait and fallback: 90 s fits inside the 120 s and
# 130 s client timeouts common in SDK wrappers and proxies (the openai SDK's own
# default, 600 s, is rarely what a caller waits), and leaves a fallback 30 s after a
# whole answer's 60 s read timeout. It bounds a stream only until its first content.
DEFAULT_DEADLINE = 90.0


class Timeouts(_Base, frozen=True):
    connect: PositiveFloat = 5.0
    # per attempt, until a stream's first content; null: as long as the read timeout
    first_token: PositiveFloat | None = DEFAULT_FIRST_TOKEN
    idle: PositiveFloat | None = None  # between stream events; default: the read timeout
    read: PositiveFloat | None = None  # default per provider (60 s; Anthropic 300 s)
    total: PositiveFloat = 600.0


class Limits(_Base, frozen=True):
    """Requests and tokens per minute. A limit is a token bucket whose capacity is its
    burst (default: one minute's worth) and which refills at ``rpm``/``tpm`` per minute."""

    rpm: Annotated[int, Meta(ge=1)] | None = None
    tpm: Annotated[int, Meta(ge=1)] | None = None
    rpm_burst: Annotated[int, Meta(ge=1)] | None = None
    tpm_burst: Annotated[int, Meta(ge=1)] | None = None


class Price(_Base, frozen=True):
    """USD per million tokens."""

    input: NonNegFloat = 0.0
    cached_input: NonNegFloat | None = None
    output: NonNegFloat = 0.0


class MockOptions(_Base, frozen=True):
    """Behaviour of the ``mock`` provider: latency before the first token and pacing."""

    latency_ms: NonNegFloat = 0.0
    tokens_per_second: NonNegFloat = 0.0  # 0 = as fast as possible
    reply_tokens: Annotated[int, Meta(ge=1, le=100_000)] = 16


class Deployment(_Base, frozen=True):
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
    health_check: HealthCheck | None = None  # field by field over routing.health_check
    # /v1/responses: the upstream's own Responses API, or translated through chat. Unset:
    # passthrough for openai and azure (v1 API, or a dated api_version from 2025-03-01),
    # translate for the rest. ``translate`` suits OpenAI-compatible chat-only servers.
    responses: Literal["passthrough", "translate"] | None = None
    region: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] | None = None  # eu, us...


class CacheOptions(_Base, frozen=True):
    ttl: Annotated[int, Meta(ge=1)]


# -- routing and resilience (pipeline/routing.py, attempts.py, breaker.py) ----------------


class RetryPolicy(_Base, frozen=True):
    """Retries of one alias's group; waits use exponential backoff with full jitter."""

    attempts: Annotated[int, Meta(ge=1, le=10)] = 3  # upstream attempts in the group, 1st included
    backoff: PositiveFloat = 0.25  # s; retry n waits uniform(0, min(max_backoff, backoff * 2^n))
    max_backoff: PositiveFloat = 2.0  # s; a longer Retry-After is returned to the client
    # s, all attempts and waits; default DEFAULT_DEADLINE, or the longest timeout.total
    # of the group when that is shorter
    deadline: PositiveFloat | None = None


class RetryBudget(_Base, frozen=True):
    """Retries in flight never exceed ``ratio`` x requests in flight + ``min_retries``."""

    ratio: Annotated[float, Meta(ge=0, le=1)] = 0.2
    min_retries: NonNegInt = 3


class BreakerOptions(_Base, frozen=True):
    """Per-deployment circuit breaker (outlier detection)."""

    consecutive_failures: Annotated[int, Meta(ge=1)] = 5
    error_rate: Annotated[float, Meta(gt=0, le=1)] = 0.5  # over ``window``...
    window: PositiveFloat = 30.0  # s
    min_requests: Annotated[int, Meta(ge=1)] = 20  # ...once the window holds this many
    ejection: PositiveFloat = 30.0  # s, first ejection; doubles with each repeat...
    max_ejection: PositiveFloat = 120.0  # s ...up to this (30, 60, 120)
    half_open_probes: Annotated[int, Meta(ge=1)] = 1  # concurrent trial requests


class HealthCheck(_Base, frozen=True):
    """Active probes of an ejected deployment (``pipeline/probes.py``). Under ``routing:``
    for every deployment, and per deployment field by field over it; unset fields take
    the defaults in ``HEALTH_CHECK_DEFAULTS``."""

    enabled: bool | None = None
    interval: Annotated[float, Meta(ge=0.05, le=3600)] | None = None  # s between probes
    timeout: Annotated[float, Meta(gt=0, le=60)] | None = None  # s, one probe
    # GET this path on the deployment's host instead of the provider's model endpoint
    path: Annotated[str, Meta(pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,255}$")] | None = None


# enabled, interval (s), timeout (s): a recovered deployment is back within ~3 s
HEALTH_CHECK_DEFAULTS = HealthCheck(enabled=True, interval=3.0, timeout=2.0)


def health_check(*layers: HealthCheck | None) -> HealthCheck:
    """The defaults, overridden field by field by each layer in turn."""
    out = HEALTH_CHECK_DEFAULTS
    for layer in layers:
        if layer is not None:
            fields = {f: getattr(layer, f) for f in layer.__struct_fields__}
            out = msgspec.structs.replace(out, **{f: v for f, v in fields.items() if v is not None})
    return out


class HedgeOptions(_Base, frozen=True):
    delay_ms: PositiveFloat  # no first token by then: same request on another deployment


class SessionOptions(_Base, frozen=True):
    """Sticky sessions (``tenants/sessions.py``): the header ``x-session-id``, or these
    body fields (``user``, ``metadata.<name>``), keep a conversation on one deployment."""

    ttl: Annotated[int, Meta(ge=0, le=30 * 86400)] = 3600  # s after its last request; 0: off
    body_fields: list[Annotated[str, Meta(pattern=r"^(user|metadata\.[\w.-]{1,64})$")]] = []


class RoutingOptions(_Base, frozen=True):
    retry: RetryPolicy = RetryPolicy()  # default for every alias
    retry_budget: RetryBudget = RetryBudget()
    breaker: BreakerOptions = BreakerOptions()
    exploration: Annotated[float, Meta(ge=0, le=1)] = 0.05  # least-latency: share sent elsewhere
    stream_keepalive: NonNegFloat = 0.0  # s before ': keep-alive' comments commit a stream; 0 off
    health_check: HealthCheck = HealthCheck()  # active probes of ejected deployments
    sessions: SessionOptions = SessionOptions()


class ModelAlias(_Base, frozen=True):
    alias: Annotated[str, Meta(min_length=1)]
    deployments: Annotated[list[Deployment], Meta(min_length=1)]
    strategy: Strategy = "weighted"
    fallbacks: list[str] = []
    limits: Limits | None = None
    cache: CacheOptions | None = None
    retry: RetryPolicy | None = None  # default: routing.retry
    hedge: HedgeOptions | None = None
    context_fallback: str | None = None  # alias with a larger context window


class GlobalLimits(_Base, frozen=True):
    default_key: Limits | None = None
    on_redis_error: Literal["open", "closed"] = "open"
    local_share: Annotated[float, Meta(gt=0, le=1)] = 0.34  # of each limit, while failing open
    default_max_tokens: Annotated[int, Meta(ge=1)] = 1024  # reserved when a request sets none
    redis_timeout_ms: Annotated[float, Meta(gt=0, le=10_000)] = 50.0  # per hot-path call


class ApiKey(_Base, frozen=True):
    """A virtual key: only its SHA-256 is in the file (``printf %s "$KEY" | sha256sum``)."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    key_sha256: Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}$")]
    limits: Limits | None = None  # field by field over limits.default_key
    models: list[Annotated[str, Meta(min_length=1)]] | None = None  # aliases or provider/model


class PluginSpec(_Base, frozen=True):
    """An operator stage (``gateway/plugins/base.py``): ``use`` is ``module:attribute``."""

    use: Annotated[str, Meta(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    at: str  # before_<stage> | after_<stage>
    options: dict[str, Any] = {}
    timeout: Annotated[float, Meta(gt=0, le=300)] = 5.0


class ResponsesOptions(_Base, frozen=True):
    """Conversation state of ``/v1/responses`` (``store`` not false), per tenant."""

    ttl: Annotated[int, Meta(ge=60, le=90 * 86_400)] = 30 * 86_400  # s; OpenAI keeps 30 days
    max_record_bytes: Annotated[int, Meta(ge=1024, le=256 * 1024 * 1024)] = 16 * 1024 * 1024


class Config(_Base, frozen=True):
    models: list[ModelAlias] = []
    limits: GlobalLimits = GlobalLimits()
    keys: list[ApiKey] = []
    routing: RoutingOptions = RoutingOptions()
    plugins: list[PluginSpec] = []
    responses: ResponsesOptions = ResponsesOptions()


_PATH = re.compile(r"\s*-\s*at\s*`\$(.*)`$")


def _field_path(msg: str) -> tuple[str, str]:
    """Split msgspec's "Expected int - at `$.a[0].b`" into ("a[0].b", "Expected int")."""
    m = _PATH.search(msg)
    if not m:
        return "", msg
    return m.group(1).lstrip("."), msg[: m.start()]


def parse_config(
    data: object, *, environ: Mapping[str, str] | None = None, check_env: bool = True
) -> Config:
    """Validate decoded YAML; raise ConfigError naming the first bad field. With
    ``check_env`` false, the variables the file names are not looked up."""
    if data is None:
        data = {}
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        path, problem = _field_path(str(exc))
        raise ConfigError(f"{path or '<root>'}: {problem}") from None
    _check_semantics(cfg, os.environ if environ is None else environ, check_env)
    return cfg


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    check_env: bool = True,
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
        return parse_config(data, environ=environ, check_env=check_env)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an upstream base URL, or None. Never repeats the URL: it
    may hold a password."""
    if not re.match(r"^https?://[^/\s]+", url):
        return "must be an http:// or https:// URL"
    if "@" in urlsplit(url).netloc:
        # aiohttp refuses URL credentials beside an API key (a 500 on every request),
        # and a key in a URL ends up in logs: keys live in variables only.
        return "must not contain credentials (user:password@); keys go in a variable"
    return None


def _check_semantics(cfg: Config, environ: Mapping[str, str], check_env: bool = True) -> None:
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
            problem = base_url_problem(d.base_url) if d.base_url is not None else None
            if problem is not None:
                raise ConfigError(f"{dwhere}.base_url: {problem}")
            if d.api_key_env is not None:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", d.api_key_env):
                    raise ConfigError(f"{dwhere}.api_key_env: not a valid variable name")
                if check_env and not environ.get(d.api_key_env):
                    # Name the variable only if it looks like a name: a key pasted here
                    # by mistake must not be printed.
                    shown = d.api_key_env if _looks_like_name(d.api_key_env) else "(hidden)"
                    raise ConfigError(
                        f"{dwhere}.api_key_env: environment variable {shown} is not set"
                        + ("" if shown != "(hidden)" else "; api_key_env takes a variable's name")
                    )
            if d.mock is not None and d.provider != "mock":
                raise ConfigError(f"{dwhere}.mock: only valid with provider: mock")
            if d.responses == "passthrough" and d.provider not in ("openai", "azure"):
                raise ConfigError(
                    f"{dwhere}.responses: passthrough needs provider openai or azure "
                    "(the others are translated through chat)"
                )
            if (
                check_env
                and d.provider == "azure"
                and d.base_url is None
                and not environ.get("AZURE_API_BASE")
            ):
                raise ConfigError(f"{dwhere}.base_url: required for azure (or set AZURE_API_BASE)")
    for i, m in enumerate(cfg.models):
        for k, fb in enumerate(m.fallbacks):
            if fb not in aliases:
                raise ConfigError(f"models[{i}].fallbacks[{k}]: unknown alias {fb!r}")
    _check_fallback_cycles(cfg)
    _check_routing(cfg, aliases)
    _check_limits(cfg)
    _check_keys(cfg)
    _check_plugins(cfg)


def _check_plugins(cfg: Config) -> None:
    """Every plugin's position exists and the plugin loads with its options."""
    from gateway.pipeline.run import POSITIONS
    from gateway.plugins.base import PluginError, load

    for i, spec in enumerate(cfg.plugins):
        if spec.at not in POSITIONS:
            raise ConfigError(
                f"plugins[{i}].at: {spec.at[:40]!r} is not before_<stage> or after_<stage> "
                f"(stages: parse, auth, cache, route, limit, attempts, settle, respond; "
                f"nothing runs after respond)"
            )
        try:
            load(spec)
        except PluginError as exc:
            raise ConfigError(f"plugins[{i}].use: {spec.use}: {exc}") from None


# A bucket's capacity and period must fit _speedups.bucket's ranges.
_MAX_BUCKET = (1 << 40) - 1


def _check_one_limits(lim: Limits | None, where: str) -> None:
    if lim is None:
        return
    for kind in ("rpm", "tpm"):
        rate: int | None = getattr(lim, kind)
        burst: int | None = getattr(lim, f"{kind}_burst")
        if burst is not None and rate is None:
            raise ConfigError(f"{where}.{kind}_burst: needs {kind}")
        if rate is None:
            continue
        capacity = burst if burst is not None else rate
        if capacity > _MAX_BUCKET:
            raise ConfigError(f"{where}.{kind}: must be at most {_MAX_BUCKET}")
        if -(-capacity * 60_000_000 // rate) > _MAX_BUCKET:
            raise ConfigError(f"{where}.{kind}_burst: more than 18,000 minutes' worth")


def _check_limits(cfg: Config) -> None:
    _check_one_limits(cfg.limits.default_key, "limits.default_key")
    seen: dict[tuple[str, str, str, str], tuple[str, Limits]] = {}
    for i, m in enumerate(cfg.models):
        _check_one_limits(m.limits, f"models[{i}].limits")
        for j, d in enumerate(m.deployments):
            where = f"models[{i}].deployments[{j}].limits"
            _check_one_limits(d.limits, where)
            if d.limits is None:
                continue
            # The provider's quota belongs to the upstream account and model, whichever
            # aliases use it: one bucket, so its limits must agree wherever it appears.
            ident = (d.provider, d.base_url or "", d.model, d.api_key_env or "")
            prev = seen.setdefault(ident, (where, d.limits))
            if prev[1] != d.limits:
                raise ConfigError(f"{where}: differs from {prev[0]} for the same deployment")


def _check_keys(cfg: Config) -> None:
    names: set[str] = set()
    digests: set[str] = set()
    for i, k in enumerate(cfg.keys):
        if k.name in names:
            raise ConfigError(f"keys[{i}].name: duplicate name {k.name!r}")
        if k.key_sha256.lower() in digests:
            raise ConfigError(f"keys[{i}].key_sha256: duplicate key (same digest as another)")
        names.add(k.name)
        digests.add(k.key_sha256.lower())
        _check_one_limits(k.limits, f"keys[{i}].limits")


def _check_routing(cfg: Config, aliases: dict[str, int]) -> None:
    for i, m in enumerate(cfg.models):
        where = f"models[{i}]"
        if m.strategy == "lowest-cost":
            for j, d in enumerate(m.deployments):
                if d.price is None:
                    raise ConfigError(
                        f"{where}.deployments[{j}].price: required by strategy lowest-cost"
                    )
        if m.hedge is not None and len(m.deployments) < 2:
            raise ConfigError(f"{where}.hedge: needs at least two deployments to hedge across")
        if m.context_fallback is not None:
            if m.context_fallback not in aliases:
                raise ConfigError(f"{where}.context_fallback: unknown alias {m.context_fallback!r}")
            if m.context_fallback == m.alias:
                raise ConfigError(f"{where}.context_fallback: an alias cannot fall back to itself")
    # context fallbacks chain (a -> b -> c); a chain that comes back is a cycle
    ctx = {m.alias: m.context_fallback for m in cfg.models}
    for i, m in enumerate(cfg.models):
        path, node = [m.alias], ctx[m.alias]
        while node is not None:
            if node in path:
                cycle = " -> ".join([*path[path.index(node) :], node])
                raise ConfigError(f"models[{i}].context_fallback: fallback cycle {cycle}")
            path.append(node)
            node = ctx[node]
    r = cfg.routing
    if r.breaker.max_ejection < r.breaker.ejection:
        raise ConfigError("routing.breaker.max_ejection: must be at least routing.breaker.ejection")
    for where, pol in [("routing.retry", r.retry)] + [
        (f"models[{i}].retry", m.retry) for i, m in enumerate(cfg.models) if m.retry is not None
    ]:
        if pol.max_backoff < pol.backoff:
            raise ConfigError(f"{where}.max_backoff: must be at least {where}.backoff")


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
