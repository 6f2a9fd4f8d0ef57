"""Stages ``settle`` and ``respond``: what the answer really cost, and the reply.

``Settle`` records the outcome on the deployment that served (metrics: requests,
latency, tokens), corrects the rate-limit reservation to the real usage and
hands the answer to the response cache. A whole answer settles at once; a
stream settles when it ends, however it ends (completed, broken, client gone),
from a close hook on its relay. ``Respond`` puts the headers together and
returns the ``Reply``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway import pricing
from gateway.errors import GatewayError, UpstreamStatus, UpstreamTimeout
from gateway.pipeline.reply import Reply
from gateway.providers.base import Deployment
from gateway.telemetry import metrics
from gateway.telemetry.logging import provider_error
from gateway.wire.chat import Usage

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext


def record_success(dep: Deployment, latency_s: float, usage: Usage | None) -> None:
    metrics.llm_provider_requests_total.labels(dep.provider, dep.label, "success").inc()
    metrics.llm_provider_latency_seconds.labels(dep.provider, dep.label).observe(latency_s)
    if usage is not None:
        record_usage(dep, usage)


def record_usage(dep: Deployment, usage: Usage) -> None:
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
    record_cost(dep, usage)


def record_cost(dep: Deployment, usage: Usage) -> None:
    """Spend at the deployment's price; a model with no known price is counted as
    unpriced, never as $0."""
    price = pricing.price_for(dep)
    if price is None:
        metrics.llm_unpriced_requests_total.labels(dep.provider, dep.label).inc()
        return
    cost = pricing.cost_usd(pricing.tokens_of(usage), price)
    metrics.llm_cost_usd_total.labels(dep.provider, dep.label).inc(cost.total)


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


def record_cancelled(dep: Deployment, usage: Usage | None) -> None:
    """The client went away mid-stream; the upstream request was closed."""
    metrics.llm_provider_requests_total.labels(dep.provider, dep.label, "cancelled").inc()
    if usage is not None:
        record_usage(dep, usage)


def stream_settler(ctx: RequestContext, t_sent: float) -> Callable[[Any], None]:
    """What runs once when a relayed stream ends, however it ends: settle the rate-limit
    reservation and record the outcome on the deployment that served."""

    def closed(r: Any) -> None:
        lease = ctx.lease
        if lease is not None:
            lease.settle_stream(r)  # usage, or what was relayed before an early end
        ctx.upstream_s = time.perf_counter() - t_sent
        ctx.usage = r.usage
        if r.error is not None:
            ctx.error = r.error.code or r.error.type
            record_failure(r.dep, r.error, mid_stream=True, ctx=ctx)
            if r.usage is not None:
                record_usage(r.dep, r.usage)
        elif r.completed:
            record_success(r.dep, ctx.upstream_s, r.usage)
        else:
            ctx.error = "client_disconnected"
            record_cancelled(r.dep, r.usage)

    return closed


class Settle:
    name = "settle"

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        served = ctx.served
        endpoint = ctx.endpoint
        assert served is not None and endpoint is not None
        dep = served.dep
        lease, cache = ctx.lease, ctx.cache
        if not ctx.stream:
            if served.attempts == 0:  # answered by the gateway itself: nothing upstream
                return None
            out, usage = served.result
            ctx.usage = usage
            record_success(dep, ctx.upstream_s, usage)
            if lease is not None:
                lease.settle(usage)  # reserved tokens -> real usage
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
        relay.add_close_hook(stream_settler(ctx, time.perf_counter() - (ctx.ttft_s or 0.0)))
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
        if ctx.lease is not None:
            ctx.lease.apply(headers)
        if ctx.stream:
            stream = served.result
            return Reply(200, headers, frames=stream.frames(), close=stream.aclose)
        return Reply(200, headers, served.result[0])
