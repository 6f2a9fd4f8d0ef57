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
from gateway.tenants.ledger import Charge, charge
from gateway.wire.chat import Usage

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext
    from gateway.tenants.tenancy import Tenancy


def record_success(
    dep: Deployment, latency_s: float, usage: Usage | None, team: str | None = None
) -> Charge | None:
    metrics.llm_provider_requests_total.labels(dep.provider, dep.label, "success").inc()
    metrics.llm_provider_latency_seconds.labels(dep.provider, dep.label).observe(latency_s)
    if usage is not None:
        return record_usage(dep, usage, team)
    return None


def record_usage(dep: Deployment, usage: Usage, team: str | None = None) -> Charge:
    tokens = metrics.llm_tokens_total
    if usage.prompt_tokens:
        tokens.labels(dep.provider, dep.label, "prompt").inc(usage.prompt_tokens)
    if usage.completion_tokens:
        tokens.labels(dep.provider, dep.label, "completion").inc(usage.completion_tokens)
    details = usage.prompt_tokens_details
    if details and isinstance(details.get("cached_tokens"), int) and details["cached_tokens"]:
        tokens.labels(dep.provider, dep.label, "cached").inc(details["cached_tokens"])
    cdetails = usage.completion_tokens_details
    if (
        cdetails
        and isinstance(cdetails.get("reasoning_tokens"), int)
        and cdetails["reasoning_tokens"]
    ):
        tokens.labels(dep.provider, dep.label, "reasoning").inc(cdetails["reasoning_tokens"])
    return record_cost(dep, usage, team)


def record_cost(dep: Deployment, usage: Usage, team: str | None = None) -> Charge:
    """Spend at the deployment's price, by team (a bounded label: ``metrics.team_label``
    caps the teams, never a key); a model with no known price is counted as unpriced,
    never as $0."""
    c = charge(dep, usage)
    if not c.priced:
        metrics.llm_unpriced_requests_total.labels(dep.provider, dep.label).inc()
        return c
    label = metrics.team_label(team) if team is not None else metrics.NO_TEAM
    metrics.llm_cost_usd_total.labels(dep.provider, dep.label, label).inc(c.total / 1e9)
    return c


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

    async def __call__(self, ctx: RequestContext) -> Reply | None:
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

    async def __call__(self, ctx: RequestContext) -> Reply | None:
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
        headers["server-timing"] = timing
        cost = ctx.cost
        if cost is not None and cost.priced:  # unpriced: no header, never a false 0
            headers["x-gateway-cost-usd"] = cost.header()
            headers["x-gateway-cost-usd-classes"] = cost.breakdown()
        if ctx.lease is not None:
            ctx.lease.apply(headers)
        if ctx.stream:
            stream = served.result
            return Reply(200, headers, frames=stream.frames(), close=stream.aclose)
        return Reply(200, headers, served.result[0])
