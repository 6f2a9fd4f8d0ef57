"""Stages ``settle`` and ``respond``: what the answer really cost, and the reply.

``Settle`` records the outcome on the deployment that served (metrics: requests,
latency, tokens, cost), prices the answer (``tenants/ledger.charge``: the
``x-gateway-cost-usd`` header, the ledger, the budget holds), corrects the
rate-limit reservation to the real usage, moves a sticky session to where it was
served, and hands the answer to the response cache. A whole answer settles at
once; a stream settles when it ends, however it ends (completed, broken, client
gone), from a close hook on its relay. ``Respond`` puts the headers together and
returns the ``Reply``. A stream's headers leave before its cost is known: its cost
is in the ledger, not in a header.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError, UpstreamStatus, UpstreamTimeout
from gateway.pipeline.reply import Reply
from gateway.providers.base import Deployment
from gateway.telemetry import metrics
from gateway.telemetry.logging import provider_error
from gateway.tenants.ledger import Charge, charge_at, rates_of
from gateway.wire.chat import Usage

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext
    from gateway.tenants.tenancy import Tenancy


class _Meter:
    """One deployment's usage metrics, resolved once: the children a served answer
    touches, and its price in nano-USD per token by class (None: unpriced). Recording
    an answer is then a few additions, not label lookups and price arithmetic in
    several modules on every request."""

    __slots__ = ("cached", "completion", "cost", "latency", "prompt", "rates", "reasoning")

    def __init__(self, dep: Deployment) -> None:
        tokens = metrics.llm_tokens_total
        p, m = dep.provider, dep.label
        self.latency = metrics.llm_provider_latency_seconds.labels(p, m)
        self.prompt = tokens.labels(p, m, "prompt")
        self.completion = tokens.labels(p, m, "completion")
        self.cached = tokens.labels(p, m, "cached")
        self.reasoning = tokens.labels(p, m, "reasoning")
        self.cost = metrics.llm_cost_usd_total.labels(p, m, metrics.NO_TEAM)
        self.rates = rates_of(dep)


def _meter(dep: Deployment) -> _Meter:
    """The deployment's meter, made at its first answer and kept with its other
    precomputed values."""
    meter: _Meter | None = dep.cache.get("meter")
    if meter is None:
        meter = dep.cache["meter"] = _Meter(dep)
    return meter


def record_success(
    dep: Deployment, latency_s: float, usage: Usage | None, team: str | None = None
) -> Charge | None:
    metrics.llm_provider_requests_total.labels(dep.provider, dep.label, "success").inc()
    _meter(dep).latency.observe(latency_s)
    if usage is not None:
        return record_usage(dep, usage, team)
    return None


def _detail(details: dict[str, Any] | None, name: str, within: int, counter: Any) -> int:
    """A usage detail count (cached, reasoning tokens): counted as the provider gave it,
    returned capped at the total it is part of; 0 when absent or not a positive int."""
    if details:
        n = details.get(name)
        if type(n) is int and n > 0:
            counter.inc(n)
            return min(n, within)
    return 0


def record_usage(dep: Deployment, usage: Usage, team: str | None = None) -> Charge:
    """Tokens by type, and the answer's cost (``tenants/ledger.charge``): spend at the
    deployment's price, by team (a bounded label: ``metrics.team_label`` caps the
    teams, never a key); a model with no known price is counted as unpriced, never as
    $0."""
    meter = _meter(dep)
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    if prompt:
        meter.prompt.inc(prompt)
    if completion:
        meter.completion.inc(completion)
    cached = _detail(usage.prompt_tokens_details, "cached_tokens", prompt, meter.cached)
    reasoning = _detail(
        usage.completion_tokens_details, "reasoning_tokens", completion, meter.reasoning
    )
    c = charge_at(meter.rates, prompt, cached, completion, reasoning)
    if not c.priced:
        metrics.llm_unpriced_requests_total.labels(dep.provider, dep.label).inc()
    elif team is None:
        meter.cost.inc(c.total / 1e9)
    else:
        metrics.llm_cost_usd_total.labels(dep.provider, dep.label, metrics.team_label(team)).inc(
            c.total / 1e9
        )
    return c


record_cost = record_usage  # the cost is recorded with the tokens


def error_kind(err: GatewayError) -> str:
    """The ``kind`` label: one of ``metrics.ERROR_KINDS`` (declared at start-up), whatever
    code an error carries."""
    if isinstance(err, UpstreamTimeout):
        return "timeout"
    if isinstance(err, UpstreamStatus):
        s = err.upstream_status
        return "rate_limited" if s == 429 else ("status_5xx" if s >= 500 else "status_4xx")
    code = err.code
    return code if code is not None and code in metrics.ERROR_KINDS else "error"


def record_failure(
    dep: Deployment,
    err: GatewayError,
    *,
    mid_stream: bool = False,
    ctx: RequestContext | None = None,
) -> None:
    """A failed upstream attempt: its metrics and its ``provider_error`` log event."""
    provider_error(ctx, dep, err, mid_stream=mid_stream)
    kind = "stream" if mid_stream else error_kind(err)
    metrics.llm_provider_requests_total.labels(dep.provider, dep.label, "error").inc()
    metrics.llm_provider_errors_total.labels(dep.provider, dep.label, kind).inc()


def record_cancelled(
    dep: Deployment, usage: Usage | None, team: str | None = None
) -> Charge | None:
    """The client went away mid-stream; the upstream request was closed."""
    metrics.llm_provider_requests_total.labels(dep.provider, dep.label, "cancelled").inc()
    if usage is not None:
        return record_usage(dep, usage, team)
    return None


def stream_settler(
    ctx: RequestContext, t_sent: float, tenancy: Tenancy | None = None
) -> Callable[[Any], None]:
    """What runs once when a relayed stream ends, however it ends: price it, settle the
    rate-limit reservation and budget holds, and record the outcome on the deployment
    that served."""
    team = ctx.principal.team if ctx.principal is not None else None

    def closed(r: Any) -> None:
        ctx.upstream_s = time.perf_counter() - t_sent
        usage = ctx.usage = r.usage  # the provider's, or what was relayed before an end
        c: Charge | None = None
        if r.error is not None:
            ctx.error = r.error.code or r.error.type
            record_failure(r.dep, r.error, mid_stream=True, ctx=ctx)
            if usage is not None:
                c = record_usage(r.dep, usage, team)
        elif r.completed:
            c = record_success(r.dep, ctx.upstream_s, usage, team)
        else:
            ctx.error = "client_disconnected"
            c = record_cancelled(r.dep, usage, team)
        if c is not None and tenancy is not None:
            tenancy.charged(ctx, r.dep, c)
        lease = ctx.lease
        if lease is not None:
            lease.settle_stream(r)

    return closed


class Settle:
    name = "settle"

    def __init__(self, tenancy: Tenancy | None = None) -> None:
        self.tenancy = tenancy

    def __call__(self, ctx: RequestContext) -> Reply | None:
        served = ctx.served
        endpoint = ctx.endpoint
        assert served is not None and endpoint is not None
        dep = served.dep
        lease, cache = ctx.lease, ctx.cache
        tenancy = self.tenancy
        if tenancy is not None:
            tenancy.sessions.served(ctx, dep)
        if not ctx.stream:
            if served.attempts == 0:  # answered by the gateway itself: nothing upstream
                return None
            out, usage = served.result
            ctx.usage = usage
            team = ctx.principal.team if ctx.principal is not None else None
            c = record_success(dep, ctx.upstream_s, usage, team)
            if c is not None and tenancy is not None:
                tenancy.charged(ctx, dep, c)
            if lease is not None:
                lease.settle(usage)  # reserved tokens -> real usage, holds -> real cost
            if cache is not None:
                cache.store(out, dep.provider, usage)
            return None
        relay = served.result
        relay.error_event = endpoint.errors.event
        metrics.llm_time_to_first_token_seconds.labels(dep.provider, dep.label).observe(
            ctx.ttft_s or 0.0
        )
        if lease is not None and lease.counts_events:
            relay.observe(lease.count)
        if cache is not None:
            cache.watch(relay, dep.provider, endpoint)
        t_sent = time.perf_counter() - (ctx.ttft_s or 0.0)
        relay.add_close_hook(stream_settler(ctx, t_sent, tenancy))
        return None


class Respond:
    name = "respond"

    def __call__(self, ctx: RequestContext) -> Reply | None:
        served = ctx.served
        assert served is not None
        headers = ctx.headers
        headers["x-gateway-provider"] = served.dep.provider
        headers["x-gateway-attempts"] = str(served.attempts)
        upstream = ctx.ttft_s if ctx.stream else ctx.upstream_s
        upstream = upstream or 0.0
        overhead = time.perf_counter() - ctx.start - upstream
        timing = f"gateway;dur={overhead * 1000:.3f}, upstream;dur={upstream * 1000:.3f}"
        if ctx.cache is not None:
            timing += ctx.cache.timing()
            headers["x-gateway-cache"] = ctx.cache.status
        elif ctx.endpoint is not None and ctx.endpoint.cache_kind is not None:
            headers["x-gateway-cache"] = "BYPASS"  # no alias caches: the stage was skipped
        headers["server-timing"] = timing
        cost = ctx.cost
        if cost is not None and cost.priced:  # unpriced: no header, never a false 0
            headers["x-gateway-cost-usd"] = cost.header()
            headers["x-gateway-cost-usd-classes"] = cost.breakdown()
        if ctx.lease is not None:
            ctx.lease.apply(headers)
        if ctx.stream:
            stream = served.result
            # ``last``: only a stream that knows it (the relay, and wrappers passing its
            # frames through as they are); any other ends with the empty closing message
            last = (lambda: stream.last) if hasattr(stream, "last") else None
            return Reply(200, headers, frames=stream.frames(), close=stream.aclose, last=last)
        return Reply(200, headers, served.result[0])
