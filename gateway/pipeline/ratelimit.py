"""Stage 2: reserve requests and tokens per minute before the upstream call; settle after.

Scopes and buckets
------------------
A request meets up to three scopes, each with an RPM and a TPM limit:
``key`` (the caller's tenant: ``limits.default_key``, field by field under
``keys[].limits``), ``model`` (``models[].limits``, across all replicas) and
``deployment`` (``models[].deployments[].limits``: the provider's own quota,
one bucket per upstream account and model whichever aliases use it).

Each limit is a ``_speedups.bucket`` GCRA bucket. Its capacity is the burst
(``rpm_burst``/``tpm_burst``, default one minute's worth: ``rpm``) and it refills
at ``rpm`` per minute: ``period_us = ceil(burst * 60e6 / rpm)``, rounded up so
the rate is never above the configured one. Over any window of T seconds a
bucket admits at most ``burst + rpm * T / 60``.

Reserve, then settle
--------------------
Before the upstream call ``reserve()`` takes 1 from every RPM bucket and the
estimate from every TPM bucket in one atomic call (one Lua script on Redis):
all or nothing. The estimate is exact prompt tokens (``gateway.tokencount``)
plus ``max_completion_tokens``/``max_tokens`` (times ``n``), else
``limits.default_max_tokens``. A prompt larger than a TPM burst can never fit:
429 at once. An estimate larger than a burst is capped at it (the request
waits for a full bucket; settle charges the rest as debt). After the answer,
``Lease.settle`` corrects every TPM bucket to the real usage in the
background (not on the client's path): a refund, or a charge into debt.
Streams settle when the relay closes: with the provider's usage, else the
prompt plus one token per relayed event (a client that left early). A
failed upstream call, or a client that left before its answer (``Lease.refund``),
refunds its tokens; requests stay counted.
When the attempt loop moves to another deployment (a retry, hedge or fallback),
``reserve_deployment`` first takes that deployment's own buckets (1 request, the
same estimate), once per request; refused, the loop skips it, and with nothing
left the request ends with that 429. These settle with the lease: real usage for
the deployment that served, a refund of the tokens for the others.

With the response cache on Redis the reservation usually travels with the cache
lookup, in its round trip (``reserve_on_miss``; docs/architecture.md): Redis runs
it right after the lookup and reserves only if the lookup sent the request
upstream, so a hit still takes nothing.

Teams and budgets
-----------------
A virtual key in a team meets a fourth scope, ``team`` (the team's RPM/TPM,
shared by its keys). A key or team with a USD budget holds the request's
maximum cost on each budget counter (``tenants/budget.py``) in the same atomic
call as the buckets: a refusal there is 429 ``insufficient_quota``. Settling
replaces the hold by the real cost (stage ``settle`` sets ``Lease.cost``), in the
same call as the tokens; a request with no answer refunds it.

Redis Cluster: every key of one call must hash to one slot. With no model or
deployment limits configured, a request only touches its tenant's buckets,
tagged ``{<tenant>}``, so tenants spread over the cluster. With any shared
(model or deployment) limit, or when the key is in a team or has a budget
(team buckets and budget counters are shared by several keys), all its limiter
keys carry the one tag ``{rl}``: one slot, one primary, still one atomic call
per request and zero over-admission. The cost is that the limiter's load (one
small script per request) is not spread over the cluster. (A key that joins a
team or gets a budget moves its buckets to ``{rl}``: it starts with full ones.)

When Redis fails
----------------
A timeout (``limits.redis_timeout_ms``, default 50 ms) or a connection error
counts in ``gateway_state_fallbacks_total{reason}``. A request with a budget then
fails closed: 503 ``budget_unavailable`` with Retry-After (spend cannot be
counted anywhere else). Otherwise, with
``on_redis_error: open`` (default), the request is decided by an in-process
limiter holding ``limits.local_share`` (default 0.34, for three replicas) of
every bucket's capacity and rate; with ``closed`` it is a 503. While Redis
answers, every admitted request is also taken (where it fits) from those local
buckets, so an outage starts from this process's recent use, not from a fresh
burst on every replica at once. A failed call is decided locally for its own
request only; the backend marks itself down after repeated failures (three in a
row over at least 0.25 s: one slow call under CPU contention is no outage) and
probes every second, so later requests go straight to the fallback and the
gateway returns to Redis by itself (``gateway_state_mode_changes_total``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from gateway.config import Config, Limits
from gateway.errors import BudgetExceeded, GatewayError, RateLimited, ServiceUnavailable
from gateway.pipeline import placement
from gateway.pipeline.lease import Lease
from gateway.store.base import Bucket, Budget, Reservation, StateBackend, StateUnavailable
from gateway.store.memory import MemoryBackend
from gateway.telemetry import metrics
from gateway.tenants import budget
from gateway.tenants.ledger import fmt_usd

if TYPE_CHECKING:
    from gateway.pipeline.auth import BudgetLimit, Principal
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.endpoint import Endpoint
    from gateway.pipeline.reply import Reply
    from gateway.providers.base import Deployment
    from gateway.providers.registry import ModelGroup, Registry
    from gateway.store.base import Take

__all__ = ["Limit", "Limiter", "bucket_shape", "duration"]

MINUTE_US = 60_000_000
_SCOPE_WORDS = {
    "key": "this API key",
    "team": "this API key's team",
    "model": "model {}",
    "deployment": "the deployment of {}",
}
_PERIOD_WORDS = {"day": "daily", "month": "monthly", "total": "total"}
_KIND_WORDS = {"r": "requests per minute", "t": "tokens per minute"}


def bucket_shape(rate_per_minute: int, burst: int | None) -> tuple[int, int]:
    """``(capacity, period_us)`` of a limit: capacity = burst, refilled at the rate."""
    capacity = burst if burst is not None else rate_per_minute
    return capacity, -(-capacity * MINUTE_US // rate_per_minute)


def duration(us: int) -> str:
    """OpenAI-style reset durations: ``120ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if us <= 0:
        return "0s"
    ms = -(-us // 1000)
    if ms < 1000:
        return f"{ms}ms"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, frac = divmod(rest, 1000)
    sec = f"{s}.{frac:03d}".rstrip("0") + "s" if frac else f"{s}s"
    if h:
        return f"{h}h{m}m{sec}"
    if m:
        return f"{m}m{sec}"
    return sec


class _Limit(NamedTuple):
    """One bucket of a plan, with what its headers and messages need."""

    bucket: Bucket
    local: Bucket  # the same bucket for the fallback limiter: local_share of it
    scope: str  # key | team | model | deployment
    kind: str  # r (requests) | t (tokens)
    per_minute: int
    label: str  # the alias, for messages (never a key)


class _Plan(NamedTuple):
    limits: tuple[_Limit, ...]
    tokens: bool  # any TPM bucket: the request's tokens must be counted


class _Spend(NamedTuple):
    counters: list[tuple[Budget, BudgetLimit, int | None]]  # counter, budget, reset
    hold: int  # nano-USD held on each: the request's maximum cost


class OnMiss(NamedTuple):
    """A reservation sent with the cache lookup (``Limiter.reserve_on_miss``)."""

    sent: Any  # the backend's handle (``gateway.store.redis.OnMiss``)
    plan: _Plan
    tokens: tuple[int, int] | None  # the estimate (None: no TPM bucket, none made)
    amounts: list[int]
    t0: float
    limiter: Limiter

    def undo(self) -> None:
        """Nobody will collect it (a hit, or the request ended): give back what it took."""
        self.limiter.undo_on_miss(self)


class Limiter:
    """The rate limits of one gateway process, over a shared backend with a local fallback."""

    def __init__(self, config: Config, registry: Registry, store: StateBackend) -> None:
        lim = config.limits
        self.store = store
        self.groups = registry.groups
        self.local = MemoryBackend()
        self.policy = lim.on_redis_error
        self.share = lim.local_share
        self.default_max_tokens = lim.default_max_tokens
        self._shadow = self.policy == "open" and store.shared
        # Only a Redis backend can send a reservation with the cache lookup.
        self._send_on_miss = getattr(store, "reserve_on_miss", None)
        self._models: dict[str, Limits] = {
            m.alias: m.limits for m in config.models if m.limits is not None
        }
        # Runtime deployments are built from the config in order: pair them up.
        self._deployments: dict[int, tuple[str, Limits]] = {}
        for m in config.models:
            group = registry.groups.get(m.alias)
            if group is None:
                continue
            for cfg, dep in zip(m.deployments, group.deployments, strict=False):
                if cfg.limits is not None:
                    ident = f"{cfg.provider}|{cfg.base_url or ''}|{cfg.model}|{cfg.api_key_env}"
                    dep_id = hashlib.sha256(ident.encode()).hexdigest()[:16]
                    self._deployments[id(dep)] = (dep_id, cfg.limits)
        self.shared = bool(self._models or self._deployments)
        # Any limit in the config at all (keys' own limits and budgets aside)?
        self.configured = bool(lim.default_key or self.shared)
        self._plans: dict[tuple[str, str, str, int], _Plan | None] = {}
        for reason in ("timeout", "error", "down"):
            metrics.gateway_state_fallbacks_total.labels(reason)

    # -- planning -----------------------------------------------------------------------

    def _plan(self, principal: Principal, group: ModelGroup, dep: Deployment) -> _Plan | None:
        dep_entry = self._deployments.get(id(dep))
        cache_key = (principal.tenant, principal.rev, group.name, id(dep) if dep_entry else 0)
        try:
            return self._plans[cache_key]
        except KeyError:
            pass
        shares = self.shared or principal.team is not None or bool(principal.budgets)
        tag = "rl" if shares else principal.tenant
        scopes: list[tuple[str, str, Limits | None]] = [
            ("key", principal.tenant, principal.limits),
            ("model", group.name, self._models.get(group.name)),
        ]
        if principal.team is not None:
            scopes.insert(1, ("team", principal.team, principal.team_limits))
        if dep_entry is not None:
            scopes.append(("deployment", dep_entry[0], dep_entry[1]))
        out = [lim for scope in scopes for lim in self._limits(tag, *scope, group.label)]
        plan = _Plan(tuple(out), any(x.kind == "t" for x in out)) if out else None
        if len(self._plans) >= 10_000:
            self._plans.clear()
        self._plans[cache_key] = plan
        return plan

    # -- stage 2 ------------------------------------------------------------------------

    @property
    def has_deployment_limits(self) -> bool:
        return bool(self._deployments)

    def deployment_id(self, dep: Deployment | None) -> str | None:
        """The identity of ``dep``'s provider quota (None: it has no limits of its own)."""
        entry = self._deployments.get(id(dep)) if dep is not None else None
        return entry[0] if entry is not None else None

    async def reserve(self, ctx: RequestContext) -> Lease | None:
        """Reserve across every scope for the request's first deployment, or raise 429
        (503 when Redis fails and policy is closed). The Lease settles, and puts the
        x-ratelimit headers on the response; None when no limit applies at all."""
        principal, group, dep, endpoint = ctx.principal, ctx.group, ctx.dep, ctx.endpoint
        assert principal is not None and group is not None and dep is not None
        assert endpoint is not None
        plan = self._plan(principal, group, dep)
        if plan is None and not principal.budgets:
            if not self._deployments:
                return None
            # Nothing to take here, but a retry elsewhere may meet a deployment's limits.
            lease = Lease(self, None, [], [], 0, {}, dep=dep)
        else:
            t0 = time.perf_counter()
            tokens = None
            if plan is not None and plan.tokens:
                tokens = endpoint.estimate(ctx, dep, self.default_max_tokens)
            spend = self._spend(ctx) if principal.budgets else None
            lease = await self._take(plan, tokens or (0, 0), t0, spend)
            lease.dep, lease.tokens = dep, tokens
        return lease

    def _spend(self, ctx: RequestContext) -> _Spend:
        """The request's budget counters and its hold: its maximum cost wherever it may go."""
        principal, group = ctx.principal, ctx.group
        assert principal is not None and group is not None
        deps = placement.reachable(self.groups, group, principal)
        hold = budget.max_cost(ctx, deps, self.default_max_tokens)
        return _Spend(budget.counters(principal, time.time()), hold)

    async def reserve_deployment(
        self, ctx: RequestContext, lease: Lease, group: ModelGroup, dep: Deployment
    ) -> None:
        """Before an attempt on ``dep``, not the deployment ``lease`` was reserved for: take
        1 request and the lease's token estimate from ``dep``'s own (deployment-scope)
        buckets, once per request, or raise 429. No limits on ``dep``: nothing, no I/O.
        The reservation settles with the lease (real usage if ``dep`` served, else a
        refund of its tokens)."""
        entry = self._deployments.get(id(dep))
        if entry is None:
            return
        first = self._deployments.get(id(lease.dep))
        if (first is not None and first[0] == entry[0]) or entry[0] in lease.extra:
            return  # the same provider quota, already reserved for this request
        plan = self._dep_plan(group, entry)
        t0 = time.perf_counter()
        if lease.tokens is None and plan.tokens:
            assert ctx.endpoint is not None
            lease.tokens = ctx.endpoint.estimate(ctx, dep, self.default_max_tokens)
        lease.extra[entry[0]] = await self._take(plan, lease.tokens or (0, 0), t0)

    def _dep_plan(self, group: ModelGroup, entry: tuple[str, Limits]) -> _Plan:
        """The deployment scope's buckets alone (for a deployment that was not first)."""
        dep_id, limits = entry  # any deployment limit makes every key {rl}: see _plan
        out = self._limits("rl", "deployment", dep_id, limits, group.label)
        return _Plan(tuple(out), any(x.kind == "t" for x in out))

    def _limits(
        self, tag: str, scope: str, ident: str, limits: Limits | None, label: str
    ) -> list[_Limit]:
        """The RPM and TPM buckets of one scope (none when it has no limits)."""
        out: list[_Limit] = []
        if limits is None:
            return out
        for kind, rate, burst in (
            ("r", limits.rpm, limits.rpm_burst),
            ("t", limits.tpm, limits.tpm_burst),
        ):
            if rate is None:
                continue
            capacity, period = bucket_shape(rate, burst)
            key = f"gw:{{{tag}}}:rl:{scope}:{ident}:{kind}"
            local = Bucket(key, max(1, int(capacity * self.share)), period)
            out.append(_Limit(Bucket(key, capacity, period), local, scope, kind, rate, label))
        return out

    async def _take(
        self, plan: _Plan | None, tokens: tuple[int, int], t0: float, spend: _Spend | None = None
    ) -> Lease:
        """One atomic reservation of ``plan`` and of the budget holds (or 429/503): the
        Lease that settles it."""
        if plan is None:
            plan = _Plan((), False)
        amounts = self._amounts(plan, tokens, t0)
        holds = [(c[0], spend.hold) for c in spend.counters] if spend is not None else []
        try:
            buckets = [x.bucket for x in plan.limits]
            if holds:
                res = await self.store.reserve(buckets, amounts, spend=holds)
            else:
                res = await self.store.reserve(buckets, amounts)
        except StateUnavailable as exc:
            return self._locally(exc, plan, tokens, t0, spend)
        return self._lease(plan, tokens, amounts, res, t0, spend)

    def _amounts(self, plan: _Plan, tokens: tuple[int, int], t0: float) -> list[int]:
        """What to take from each bucket (1 request; the estimate, capped at a TPM burst),
        or 429 for a prompt that can never fit."""
        prompt, completion = tokens
        estimate = prompt + completion
        for lim in plan.limits:
            if lim.kind == "t" and prompt > lim.bucket.capacity:
                self._refuse_too_large(lim, prompt, time.perf_counter() - t0)
        return [1 if x.kind == "r" else min(estimate, x.bucket.capacity) for x in plan.limits]

    def _locally(
        self,
        exc: StateUnavailable,
        plan: _Plan,
        tokens: tuple[int, int],
        t0: float,
        spend: _Spend | None,
    ) -> Lease:
        """Redis failed this request: 503 (budgets, or policy closed), else decide it on
        the in-process limiter."""
        metrics.gateway_state_fallbacks_total.labels(exc.reason).inc()
        if spend is not None and spend.counters:  # counted in one place only: fail closed
            raise ServiceUnavailable(
                "Spend budgets cannot be checked right now; try again shortly.",
                code="budget_unavailable",
                headers={"retry-after": "1"},
            ) from None
        if self.policy == "closed":
            raise ServiceUnavailable(
                "Rate limits cannot be checked right now; try again shortly.",
                code="rate_limiter_unavailable",
                headers={"retry-after": "1"},
            ) from None
        estimate = tokens[0] + tokens[1]
        amounts = [1 if x.kind == "r" else min(estimate, x.local.capacity) for x in plan.limits]
        res = self.local.reserve_now([x.local for x in plan.limits], amounts)
        return self._lease(plan, tokens, amounts, res, t0, None, self.local)

    def _lease(
        self,
        plan: _Plan,
        tokens: tuple[int, int],
        amounts: list[int],
        res: Reservation,
        t0: float,
        spend: _Spend | None,
        backend: StateBackend | None = None,
    ) -> Lease:
        """The reservation's answer: its headers, a 429 for a refusal, else the Lease."""
        if backend is None:
            backend = self.store
            if res.allowed and self._shadow:
                self.local.take_available(
                    [x.local for x in plan.limits],
                    [min(a, x.local.capacity) for a, x in zip(amounts, plan.limits, strict=True)],
                )
        elapsed = time.perf_counter() - t0
        metrics.gateway_ratelimit_seconds.observe(elapsed)
        headers = _headers(plan, res)
        headers["server-timing"] = f"ratelimit;dur={elapsed * 1000:.3f}"
        if not res.allowed:
            if spend is not None and not all(t.ok for t in res.spend):
                self._refuse_budget(spend, res, headers)
            self._refuse(plan, res, headers)
        buckets, reserved = [], []
        for lim, amount in zip(plan.limits, amounts, strict=True):
            if lim.kind == "t":
                buckets.append(lim.local if backend is self.local else lim.bucket)
                reserved.append(amount)
        lease = Lease(self, backend, buckets, reserved, tokens[0], headers)
        if spend is not None:
            lease.holds, lease.hold = [c[0] for c in spend.counters], spend.hold
        return lease

    # -- the reservation sent with the cache lookup ------------------------------------

    def reserve_on_miss(self, ctx: RequestContext, cache: tuple[str, str, str]) -> OnMiss | None:
        """Stage ``limit``'s reservation, queued now behind the cache lookup the cache
        stage just queued on the same Redis connection: one round trip carries both,
        and Redis makes the reservation only if the lookup sends the request upstream
        (``RedisBackend.reserve_on_miss``). ``cache``: the lookup's entry key, lock key and
        lock token. None: nothing sent (no limit applies, the prompt can never fit, no
        auto-pipeline): stage ``limit`` reserves as usual, and says why."""
        principal, group, dep, endpoint = ctx.principal, ctx.group, ctx.dep, ctx.endpoint
        send = self._send_on_miss
        if send is None or principal is None or group is None or dep is None:
            return None
        if principal.budgets or endpoint is None:
            return None
        plan = self._plan(principal, group, dep)
        if plan is None:
            return None
        t0 = time.perf_counter()
        try:
            tokens = (0, 0)
            if plan.tokens:
                tokens = endpoint.estimate(ctx, dep, self.default_max_tokens)
            amounts = self._amounts(plan, tokens, t0)
        except GatewayError:
            return None
        sent = send(cache, [x.bucket for x in plan.limits], amounts)
        if sent is None:
            return None
        return OnMiss(sent, plan, tokens if plan.tokens else None, amounts, t0, self)

    async def reservation_on_miss(self, ctx: RequestContext, pending: OnMiss) -> Lease | None:
        """The Lease of a reservation sent with the cache lookup (or 429/503, as
        ``reserve``); None when Redis skipped it: stage ``limit`` then reserves as usual."""
        tokens = pending.tokens or (0, 0)
        try:
            res = await self.store.reservation_on_miss(pending.sent)  # type: ignore[attr-defined]
        except StateUnavailable as exc:
            lease = self._locally(exc, pending.plan, tokens, pending.t0, None)
        else:
            if res is None:
                return None
            lease = self._lease(pending.plan, tokens, pending.amounts, res, pending.t0, None)
        lease.dep, lease.tokens = ctx.dep, pending.tokens
        return lease

    def undo_on_miss(self, pending: OnMiss) -> None:
        """A reservation sent with the lookup that nobody will await (the request was
        answered from the cache, or ended): whatever Redis took, it gives back."""
        buckets = [x.bucket for x in pending.plan.limits]
        self.store.undo(pending.sent, buckets, pending.amounts)  # type: ignore[attr-defined]

    def _refuse_budget(self, spend: _Spend, res: Reservation, headers: dict[str, str]) -> None:
        """429 insufficient_quota naming the budget with the least room."""
        refused = [
            (c, take) for c, take in zip(spend.counters, res.spend, strict=True) if not take.ok
        ]
        (counter, limit, reset_at), take = min(refused, key=lambda x: x[0][0].limit - x[1].used)
        metrics.llm_budget_refusals_total.labels(limit.scope).inc()
        whose = "This API key's" if limit.scope == "key" else f"Team {limit.ident!r}'s"
        left = max(0, counter.limit - take.used)
        when = "it does not reset"
        out = {k: v for k, v in headers.items() if k == "server-timing"}
        if reset_at is not None:
            wait = max(1, int(reset_at - time.time()))
            out["retry-after"] = str(wait)
            when = "it resets at " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset_at))
        raise BudgetExceeded(
            f"{whose} {_PERIOD_WORDS[limit.period]} budget of ${_usd(counter.limit)} has "
            f"${_usd(left)} left; this request may cost up to ${_usd(spend.hold, up=True)} "
            f"(set max_tokens lower to need less); {when}.",
            headers=out,
        )

    def _refuse(self, plan: _Plan, res: Reservation, headers: dict[str, str]) -> None:
        worst = max(
            (i for i, t in enumerate(res.takes) if not t.ok),
            key=lambda i: res.takes[i].retry_after_us,
        )
        lim = plan.limits[worst]
        retry_us = max(t.retry_after_us for t in res.takes if not t.ok)
        headers["retry-after"] = str(max(1, -(-retry_us // 1_000_000)))
        headers["retry-after-ms"] = str(-(-retry_us // 1000))
        metrics.llm_rate_limit_exceeded_total.labels(lim.scope).inc()
        where = _SCOPE_WORDS[lim.scope].format(repr(lim.label))
        raise RateLimited(
            f"Rate limit reached for {where}: {lim.per_minute} {_KIND_WORDS[lim.kind]}. "
            f"Please try again in {duration(retry_us)}.",
            headers=headers,
        )

    def _refuse_too_large(self, lim: _Limit, prompt: int, elapsed: float) -> None:
        metrics.llm_rate_limit_exceeded_total.labels(lim.scope).inc()
        where = _SCOPE_WORDS[lim.scope].format(repr(lim.label))
        raise RateLimited(
            f"Request too large for {where}: {prompt} prompt tokens exceed the burst of "
            f"{lim.bucket.capacity} tokens of its {lim.per_minute} tokens per minute.",
            headers={"server-timing": f"ratelimit;dur={elapsed * 1000:.3f}"},
        )

    # -- stage 7 ------------------------------------------------------------------------

    def settle(self, lease: Lease, actual: int, cost: int | None = None) -> None:
        """Correct ``lease``'s TPM reservations to ``actual`` tokens and its budget holds
        to ``cost`` nano-USD (None: the hold stands), off the client's path: the backend
        applies it at once in-process, in the background on Redis."""
        lease.settled = True
        todo = [(b, r) for b, r in zip(lease.buckets, lease.reserved, strict=True) if r != actual]
        spend = []
        if cost is not None and cost != lease.hold:
            spend = [(b, lease.hold, cost) for b in lease.holds]
        if (not todo and not spend) or lease.backend is None:
            return
        buckets = [b for b, _ in todo]
        reserved = [r for _, r in todo]
        if spend:
            lease.backend.settle_later(buckets, reserved, [actual] * len(todo), spend)
        else:
            lease.backend.settle_later(buckets, reserved, [actual] * len(todo))


def _usd(nano: int, up: bool = False) -> str:
    """Nano-USD for people: to the micro-dollar (rounded up for a maximum)."""
    micro = -(-nano // 1000) if up else nano // 1000
    return fmt_usd(micro * 1000)


def _headers(plan: _Plan, res: Reservation) -> dict[str, str]:
    """The x-ratelimit trio per kind, from the most restrictive bucket of that kind: a
    refusing one (longest wait) if any, else the one with the fewest tokens left."""
    best: dict[str, tuple[tuple[bool, int, int, int], _Limit, Take]] = {}
    for lim, take in zip(plan.limits, res.takes, strict=True):
        rank = (take.ok, -take.retry_after_us, take.remaining, -take.reset_us)
        held = best.get(lim.kind)
        if held is None or rank < held[0]:
            best[lim.kind] = (rank, lim, take)
    out: dict[str, str] = {}
    for kind, suffix in (("r", "requests"), ("t", "tokens")):
        if kind in best:
            _, lim, take = best[kind]
            out[f"x-ratelimit-limit-{suffix}"] = str(lim.per_minute)
            out[f"x-ratelimit-remaining-{suffix}"] = str(take.remaining)
            out[f"x-ratelimit-reset-{suffix}"] = duration(take.reset_us)
    return out


class Limit:
    """Stage ``limit``: ``ctx.lease`` reserved on the first deployment, or 429 / 503."""

    name = "limit"

    def __init__(self, limiter: Limiter, keys: bool) -> None:
        """``keys``: keys exist whose own limits or budgets the limiter must check."""
        self.limiter = limiter
        self.reserve = limiter.reserve
        self.active = keys or limiter.configured

    def applies(self, endpoint: Endpoint) -> bool:
        """Nothing limited anywhere (no limits, no keys): nothing to reserve."""
        return self.active and endpoint.limited

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        pending = ctx.reserving  # sent with the cache lookup (``CacheStage``)
        if pending is not None:
            ctx.reserving = None
            try:
                lease = await self.limiter.reservation_on_miss(ctx, pending)
            except asyncio.CancelledError:
                pending.undo()  # its answer (shielded: still coming) is given back
                raise
            if lease is not None:
                ctx.lease = lease
                return None
        ctx.lease = await self.reserve(ctx)
        return None
