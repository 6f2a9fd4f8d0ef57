"""Model names to deployments: built once at start-up from Settings.

A client's ``model`` is resolved, in order, as
1. an alias from the config file;
2. ``provider/model`` for an enabled provider (e.g. ``openai/gpt-4o-mini``);
3. a bare model name whose provider is clear from its prefix (``gpt-``,
   ``claude-``, ``gemini-``, ``mock-``...) and enabled.
Anything else is a 404 ``model_not_found``. Groups for (2) and (3) are made
on first use and kept, up to a bound, so resolution is a dict lookup.

Credentials: a deployment is sent exactly the key its config names
(``api_key_env``), and none when it names none, except at the URL the
provider-wide key (``OPENAI_API_KEY``...) was set for: the provider's public URL
or its ``*_BASE_URL`` variable. A self-hosted server given its own ``base_url``
never receives the operator's OpenAI key. Every key sent is registered with
``gateway.scrub``, so no upstream can echo it back to a client or into the logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from gateway.config import DEFAULT_DEADLINE, ModelAlias, RetryPolicy, Timeouts
from gateway.config import Deployment as DeploymentConfig
from gateway.errors import ModelNotFound
from gateway.providers.base import Adapter, Deployment
from gateway.providers.base import Timeouts as ResolvedTimeouts
from gateway.providers.mock import MockTransport
from gateway.providers.openai import OpenAIAdapter
from gateway.providers.transport import build_transport
from gateway.scrub import register as register_secrets
from gateway.telemetry.metrics import LabelGuard

if TYPE_CHECKING:
    from gateway.settings import ProviderEnv, Secret, Settings

# Default read timeouts per provider (seconds): reasoning models think for long.
READ_TIMEOUTS = {"openai": 60.0, "azure": 60.0, "anthropic": 300.0, "gemini": 300.0, "mock": 60.0}
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("mock-", "mock"),
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding-", "openai"),
    ("ft:", "openai"),
    ("claude-", "anthropic"),
    ("gemini-", "gemini"),
)
_MAX_ADHOC = 1024


@dataclass(frozen=True, slots=True)
class ModelGroup:
    """An alias (or an ad-hoc ``provider/model``) and the deployments that serve it."""

    name: str
    label: str
    deployments: tuple[Deployment, ...]
    strategy: str = "weighted"
    fallbacks: tuple[str, ...] = ()
    retry: RetryPolicy | None = None  # None: the routing-wide default
    hedge_delay: float | None = None  # s; None: no hedging
    context_fallback: str | None = None  # alias tried on a context-length error
    # The request deadline when the retry policy sets none: ``DEFAULT_DEADLINE``, or the
    # group's longest ``timeout.total`` when shorter (made once, not per request).
    default_deadline: float = field(init=False)

    def __post_init__(self) -> None:
        longest = max(d.timeouts.total for d in self.deployments)
        object.__setattr__(self, "default_deadline", min(DEFAULT_DEADLINE, longest))


def _adapter_for(provider: str) -> Adapter:
    if provider in ("openai", "mock"):
        return OpenAIAdapter(provider)
    if provider == "anthropic":
        from gateway.providers.anthropic import AnthropicAdapter

        return AnthropicAdapter()
    if provider == "azure":
        from gateway.providers.azure import AzureAdapter

        return AzureAdapter()
    if provider == "gemini":
        from gateway.providers.gemini import GeminiAdapter

        return GeminiAdapter()
    raise ModelNotFound(f"provider {provider} is not supported by this build", param="model")


class Registry:
    def __init__(
        self,
        settings: Settings,
        transports: dict[tuple[str, str], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        """``transports``: a previous registry's upstream pools, kept across a reload
        (``gateway/reload.py``): shared, and closed once, at shutdown."""
        self._settings = settings
        self.transports = {} if transports is None else transports
        self._adapters: dict[str, Adapter] = {}
        self.providers: dict[str, ProviderEnv] = dict(settings.providers)
        self.groups: dict[str, ModelGroup] = {}
        self._adhoc: dict[str, ModelGroup] = {}
        self._labels = LabelGuard()
        for alias in settings.config.models:
            self.groups[alias.alias] = self._group_from_config(alias)
        # Every region a configured deployment is in (ad-hoc groups have none).
        self.regions = frozenset(
            d.region for g in self.groups.values() for d in g.deployments if d.region
        )

    # -- construction (start-up only) ---------------------------------------------------

    def _transport(self, provider: str, base_url: str, read: float) -> httpx.AsyncBaseTransport:
        key = (provider, base_url)
        t = self.transports.get(key)
        if t is None:
            if provider == "mock":
                t = MockTransport()
            else:
                t = build_transport(
                    self._settings.upstream_transport,
                    pool_size=self._settings.upstream_pool_size,
                    connect_timeout=5.0,
                    read_timeout=read,
                )
            self.transports[key] = t
        return t

    def _adapter(self, provider: str) -> Adapter:
        a = self._adapters.get(provider)
        if a is None:
            a = self._adapters[provider] = _adapter_for(provider)
        return a

    def _deployment(self, cfg: DeploymentConfig, label: str) -> Deployment:
        env = self.providers.get(cfg.provider)
        base_url = cfg.base_url or (env.base_url if env else "") or _default_base(cfg.provider)
        api_key = self._credential(cfg, env)
        if api_key is not None:
            register_secrets([api_key.reveal()])
        timeouts = _resolve_timeouts(cfg.provider, cfg.timeout)
        dep = Deployment(
            provider=cfg.provider,
            model=cfg.model,
            label=label,
            base_url=base_url.rstrip("/"),
            api_key=api_key,
            timeouts=timeouts,
            transport=self._transport(cfg.provider, base_url, timeouts.read),
            adapter=self._adapter(cfg.provider),
            api_version=cfg.api_version or (env.api_version if env else None),
            weight=cfg.weight,
            priority=cfg.priority,
            price=cfg.price,
            mock=cfg.mock,
            region=cfg.region,
        )
        dep.adapter.prepare(dep)
        dep.responses = _responses_mode(cfg, dep)
        return dep

    def _credential(self, cfg: DeploymentConfig, env: ProviderEnv | None) -> Secret | None:
        """The key ``cfg`` names; else the provider-wide key, only at the URL it is for."""
        if cfg.api_key_env:
            return self._settings.secret_env(cfg.api_key_env)
        if env is None or env.api_key is None:
            return None
        if cfg.base_url is None or _same_url(cfg.base_url, env.base_url):
            return env.api_key
        if _same_url(cfg.base_url, _default_base(cfg.provider)):
            return env.api_key  # the provider's own public URL
        return None

    def _group_from_config(self, alias: ModelAlias) -> ModelGroup:
        deps = tuple(self._deployment(d, alias.alias) for d in alias.deployments)
        return ModelGroup(
            alias.alias,
            alias.alias,
            deps,
            alias.strategy,
            tuple(alias.fallbacks),
            retry=alias.retry,
            hedge_delay=alias.hedge.delay_ms / 1000 if alias.hedge is not None else None,
            context_fallback=alias.context_fallback,
        )

    # -- resolution (hot path) ----------------------------------------------------------

    def resolve(self, model: str) -> ModelGroup:
        group = self.groups.get(model) or self._adhoc.get(model)
        if group is not None:
            return group
        provider, upstream = self._split(model)
        if provider is None or provider not in self.providers:
            raise ModelNotFound(
                f"The model `{model[:200]}` does not exist or is not served by this gateway",
                param="model",
            )
        cfg = DeploymentConfig(provider=provider, model=upstream)  # type: ignore[arg-type]
        label = self._labels(f"{provider}/{upstream}")
        group = ModelGroup(model, label, (self._deployment(cfg, label),))
        if len(self._adhoc) < _MAX_ADHOC:
            self._adhoc[model] = group
        return group

    @staticmethod
    def _split(model: str) -> tuple[str | None, str]:
        if "/" in model:
            provider, _, upstream = model.partition("/")
            if upstream:
                return provider, upstream
            return None, model
        for prefix, provider in _PREFIXES:
            if model.startswith(prefix):
                return provider, model
        return None, model

    def provider_deployment(self, provider: str) -> Deployment:
        """A deployment for provider-level calls (listing models), made once."""
        key = f"\0{provider}"
        group = self._adhoc.get(key)
        if group is None:
            cfg = DeploymentConfig(provider=provider, model="-")  # type: ignore[arg-type]
            group = ModelGroup(key, provider, (self._deployment(cfg, provider),))
            self._adhoc[key] = group
        return group.deployments[0]

    def enabled(self) -> list[str]:
        return sorted(self.providers)

    async def start(self) -> None:
        """Open every known upstream's connection pool inside the running loop."""
        for t in self.transports.values():
            start = getattr(t, "start", None)
            if start is not None:
                await start()

    async def aclose(self) -> None:
        for t in self.transports.values():
            await t.aclose()


def _responses_mode(cfg: DeploymentConfig, dep: Deployment) -> str:
    """How ``dep`` serves ``/v1/responses``: its own Responses API, or translated via chat."""
    native = dep.adapter.native_responses
    if native is None:
        return "translate"
    if cfg.responses is not None:
        return cfg.responses
    return "passthrough" if native.serves_responses(dep) else "translate"


def _default_base(provider: str) -> str:
    from gateway.settings import DEFAULT_BASE_URLS

    return DEFAULT_BASE_URLS.get(provider, "")


def _same_url(a: str, b: str) -> bool:
    """Equal base URLs, ignoring a trailing slash and the case of scheme and host."""
    if not a or not b:
        return False
    pa, pb = urlsplit(a.rstrip("/")), urlsplit(b.rstrip("/"))
    return (pa.scheme.lower(), pa.netloc.lower(), pa.path) == (
        pb.scheme.lower(),
        pb.netloc.lower(),
        pb.path,
    )


def _resolve_timeouts(provider: str, t: Timeouts) -> ResolvedTimeouts:
    read = t.read or READ_TIMEOUTS.get(provider, 60.0)
    return ResolvedTimeouts(
        connect=t.connect,
        read=read,
        first_token=t.first_token or read,
        idle=t.idle or read,
        total=t.total,
    )
