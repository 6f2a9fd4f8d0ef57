"""Stage 1: the caller's API key -> a ``Principal`` (tenant id, limits, allowed models,
team, budgets, regions, expiry).

Keys come from ``Authorization: Bearer <key>``, or ``x-api-key`` (Anthropic
clients). The config's ``keys:`` holds only SHA-256 digests: the presented key
is hashed, looked up by digest, and the stored digest compared with
``hmac.compare_digest`` (the dict lookup only ever sees a digest, never the
key). Virtual keys (the admin API's, ``gateway/tenants``) are looked up by their
keyed digest in the state backend, through a per-process cache
(``tenants/directory.py``). The key itself is never stored, logged, echoed or
put in a Redis key.

* ``keys:`` or ``GATEWAY_MASTER_KEY`` configured: a missing or unknown key is 401
  ``invalid_api_key`` (an expired virtual key too); a key with a ``models:`` list
  asking for another model is 403 ``model_not_allowed``. The tenant id is the
  key's ``name`` (YAML) or id (virtual). The master key is no API key.
* neither: the gateway is open. The tenant is the first 16 hex characters
  of the presented key's digest, or ``anonymous`` without one, so
  ``limits.default_key`` still applies per presented key.

The tenant id is plain ``[A-Za-z0-9_.-]`` text: safe as a Redis hash tag.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from gateway.config import Config, Limits
from gateway.errors import AuthenticationFailed, PermissionDenied

if TYPE_CHECKING:
    from litestar.types import Scope

    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.reply import Reply
    from gateway.providers.registry import Registry
    from gateway.tenants.directory import Directory

__all__ = [
    "ANONYMOUS",
    "Auth",
    "BudgetLimit",
    "Keyring",
    "Principal",
    "credentials",
    "merge_limits",
]

ANONYMOUS = "anonymous"
_MAX_KEY_BYTES = 4096  # longer is no key of ours; do not hash megabytes


class BudgetLimit(NamedTuple):
    scope: str  # key | team
    ident: str  # the key's id or the team's
    nano: int  # nano-USD per period
    period: str  # day | month | total


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    name: str
    limits: Limits | None = None
    models: frozenset[str] | None = None  # None = every model
    team: str | None = None
    team_limits: Limits | None = None  # the team's RPM/TPM, shared by its keys
    budgets: tuple[BudgetLimit, ...] = ()
    regions: frozenset[str] | None = None  # None = anywhere; else only deployments there
    expires_at: float | None = None  # unix seconds
    rev: str = ""  # changes whenever the key or its team changes (plan caches key on it)


def merge_limits(default: Limits | None, override: Limits | None) -> Limits | None:
    """A key's limits field by field over ``limits.default_key``."""
    if override is None or default is None:
        return override or default
    return Limits(
        rpm=override.rpm if override.rpm is not None else default.rpm,
        tpm=override.tpm if override.tpm is not None else default.tpm,
        rpm_burst=override.rpm_burst if override.rpm is not None else default.rpm_burst,
        tpm_burst=override.tpm_burst if override.tpm is not None else default.tpm_burst,
    )


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The caller's key from ``Authorization: Bearer`` or ``x-api-key``; None if absent."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Keyring:
    """The configured virtual keys, by digest."""

    def __init__(
        self, config: Config, directory: Directory | None = None, closed: bool = False
    ) -> None:
        default = config.limits.default_key
        self.default_limits = default
        self.directory = directory  # virtual keys (with GATEWAY_MASTER_KEY)
        self.closed = bool(config.keys) or closed
        self._aliases = frozenset(m.alias for m in config.models)
        self._by_digest: dict[str, tuple[str, Principal]] = {}
        for k in config.keys:
            digest = k.key_sha256.lower()
            principal = Principal(
                tenant=k.name,
                name=k.name,
                limits=merge_limits(default, k.limits),
                models=frozenset(k.models) if k.models is not None else None,
            )
            self._by_digest[digest] = (digest, principal)
        self._anonymous = Principal(tenant=ANONYMOUS, name=ANONYMOUS, limits=default)
        self._open: dict[str, Principal] = {}

    async def authenticate(
        self,
        headers: Mapping[str, str],
        model: str,
        resolve: Callable[[str], Any] | None = None,
    ) -> Principal:
        """The caller's Principal, 401 / 403 as the module docstring says. ``resolve(model)``
        gives the model's group (its ``name`` is the canonical ``provider/model`` of bare
        names)."""
        principal = await self.find(headers)
        self.check_model(principal, model, resolve)
        return principal

    def check_model(
        self, principal: Principal, model: str, resolve: Callable[[str], Any] | None
    ) -> None:
        """403 when the key has an allow-list without ``model``."""
        if principal.models is not None and model not in principal.models:
            canonical = model
            if resolve is not None and model not in self._aliases:
                dep = resolve(model).deployments[0]  # an ad-hoc group: one deployment
                canonical = f"{dep.provider}/{dep.model}"
            if canonical not in principal.models:
                raise PermissionDenied(
                    f"This API key is not allowed to use the model {model[:100]!r}.",
                    param="model",
                    code="model_not_allowed",
                )

    async def find(self, headers: Mapping[str, str]) -> Principal:
        """The caller's Principal: a YAML key, else a virtual key, else 401 (open: the
        presented key's tenant)."""
        directory = self.directory
        if directory is None:
            return self.principal(headers)
        key = presented_key(headers)
        if not key or len(key) > _MAX_KEY_BYTES:
            return self.principal(headers)
        entry = self._by_digest.get(_digest(key))
        if entry is not None:
            return entry[1]
        found = await directory.lookup(key)
        if found is None:
            return self.principal(headers)  # unknown: 401 (open: the key's own tenant)
        if found.expires_at is not None and found.expires_at <= time.time():
            raise AuthenticationFailed("This API key has expired.", code="invalid_api_key")
        return found

    def principal(self, headers: Mapping[str, str]) -> Principal:
        key = presented_key(headers)
        if key is not None and len(key) > _MAX_KEY_BYTES:
            key = ""  # never matches; and do not hash it
        if not self.closed:
            if not key:
                return self._anonymous
            tenant = _digest(key)[:16]
            p = self._open.get(tenant)
            if p is None:
                if len(self._open) >= 100_000:
                    self._open.clear()
                p = self._open[tenant] = Principal(
                    tenant=tenant, name=tenant, limits=self.default_limits
                )
            return p
        if not key:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>'.", code="invalid_api_key"
            )
        digest = _digest(key)
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry[0], digest):
            raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
        return entry[1]


class Auth:
    """Stage ``auth``: ``ctx.principal`` from the caller's key, ``ctx.group`` from the model."""

    name = "auth"

    def __init__(self, keyring: Keyring, registry: Registry) -> None:
        self.keyring = keyring
        self.registry = registry

    def __call__(self, ctx: RequestContext) -> Reply | Awaitable[None] | None:
        assert ctx.scope is not None
        headers = credentials(ctx.scope)
        keyring = self.keyring
        if keyring.directory is None:  # YAML keys or an open gateway: no I/O
            self._admit(ctx, keyring.principal(headers))
            return None
        return self._look_up(ctx, headers)

    async def _look_up(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        self._admit(ctx, await self.keyring.find(headers))

    def _admit(self, ctx: RequestContext, principal: Principal) -> None:
        resolve = self.registry.resolve
        self.keyring.check_model(principal, ctx.model, resolve)
        ctx.principal = principal
        ctx.group = resolve(ctx.model)


def credentials(scope: Scope) -> dict[str, str]:
    """The headers that may carry the caller's key, from the raw ASGI headers."""
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        if k == b"authorization" or k == b"x-api-key":
            out.setdefault(k.decode(), v.decode("latin-1"))
    return out
