"""Stage 7: after the answer, record what it really cost (tokens, latency, outcome)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway import pricing
from gateway.errors import GatewayError, UpstreamStatus, UpstreamTimeout
from gateway.providers.base import Deployment
from gateway.telemetry import metrics
from gateway.wire.chat import Usage

if TYPE_CHECKING:
    from gateway.pipeline.relay import StreamRelay


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


def record_failure(dep: Deployment, err: GatewayError, *, mid_stream: bool = False) -> None:
    kind = "stream" if mid_stream else error_kind(err)
    metrics.llm_provider_requests_total.labels(dep.provider, dep.label, "error").inc()
    metrics.llm_provider_errors_total.labels(dep.provider, dep.label, kind).inc()


def record_cancelled(dep: Deployment, usage: Usage | None) -> None:
    """The client went away mid-stream; the upstream request was closed."""
    metrics.llm_provider_requests_total.labels(dep.provider, dep.label, "cancelled").inc()
    if usage is not None:
        record_usage(dep, usage)


def stream_closer(info: Any, lease: Any, t_sent: float) -> Callable[[StreamRelay], None]:
    """What runs once when a relayed stream ends, however it ends: settle the rate-limit
    reservation (``lease``) and record the outcome on the deployment that served."""

    def on_close(r: StreamRelay) -> None:
        lease.settle_stream(r)  # usage, or what was relayed before an early end
        total = time.perf_counter() - t_sent
        info.upstream_s = total
        if r.error is not None:
            record_failure(r.dep, r.error, mid_stream=True)
            if r.usage is not None:
                record_usage(r.dep, r.usage)
        elif r.completed:
            record_success(r.dep, total, r.usage)
        else:
            info.error = "client_disconnected"
            record_cancelled(r.dep, r.usage)

    return on_close
