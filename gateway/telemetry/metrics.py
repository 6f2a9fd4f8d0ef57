"""Every Prometheus metric, defined once, with bounded labels only.

Labels are drawn from small closed sets: provider names, model *aliases*
(config aliases, or ``provider/model`` names capped by ``LabelGuard``), route
templates, status codes, error kinds. Never prompt, user or key text.

With several Granian workers, ``llm-gateway serve`` sets PROMETHEUS_MULTIPROC_DIR
before any worker imports this module, so every value lives in a shared mmap
file and one ``/metrics`` listener on METRICS_PORT aggregates all workers.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from gateway.telemetry.batch import BATCH, batch_child

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

http_requests_total = Counter(
    "http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
http_request_duration_seconds = Histogram(
    "http_request_duration_seconds",
    "Time to the end of the response",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
llm_provider_requests_total = Counter(
    "llm_provider_requests_total", "Upstream requests by outcome", ["provider", "model", "outcome"]
)
llm_provider_errors_total = Counter(
    "llm_provider_errors_total", "Upstream failures by kind", ["provider", "model", "kind"]
)
llm_provider_latency_seconds = Histogram(
    "llm_provider_latency_seconds",
    "Upstream time from request sent to last byte",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
)
llm_time_to_first_token_seconds = Histogram(
    "llm_time_to_first_token_seconds",
    "Upstream time from request sent to the first streamed content event",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
)
llm_tokens_total = Counter(
    "llm_tokens_total", "Tokens reported by providers", ["provider", "model", "kind"]
)
llm_rate_limit_exceeded_total = Counter(
    "llm_rate_limit_exceeded_total", "Requests refused by a rate limit", ["scope"]
)
gateway_overhead_seconds = Histogram(
    "gateway_overhead_seconds",
    "Time the gateway itself spent on a request (excluding upstream waits)",
    ["route"],
    buckets=_FAST_BUCKETS,
)
gateway_speedups_info = Gauge(
    "gateway_speedups_info",
    "1 for the twin each _speedups kernel loaded (c or py)",
    ["kernel", "implementation"],
    multiprocess_mode="max",
)


llm_provider_ratelimit_remaining = Gauge(
    "llm_provider_ratelimit_remaining",
    "What a provider's rate-limit headers last said is left (requests or tokens)",
    ["provider", "model", "kind"],
    multiprocess_mode="mostrecent",
)


def _memoize_labels(metric: Any) -> None:
    """Make ``metric.labels(*values)`` a dict lookup after the first call.

    prometheus-client validates and locks on every ``labels()`` call; the hot path
    calls it about eight times per request with label sets drawn from small
    closed sets, so the children are kept (bounded by those sets). Counter and
    Histogram children write through the batch (``telemetry/batch.py``).
    """
    resolve = metric.labels
    children: dict[tuple[str, ...], Any] = {}
    kind = metric._type

    def labels(*values: str, **kw: str) -> Any:
        if kw:
            return batch_child(kind, resolve(*values, **kw))
        child = children.get(values)
        if child is None:
            child = children[values] = batch_child(kind, resolve(*values))
        return child

    metric.labels = labels


OVERFLOW_LABEL = "other"


class LabelGuard:
    """Caps how many distinct ad-hoc model labels exist; the rest become ``other``."""

    def __init__(self, limit: int = 100) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, label: str) -> str:
        if label in self._seen:
            return label
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(label)
                return label
        return OVERFLOW_LABEL


RATE_LIMIT_SCOPES = ("key", "model", "deployment")  # and "team" with virtual keys
PROVIDER_OUTCOMES = ("success", "error", "cancelled")
# ``llm_provider_errors_total{kind}``: what ``pipeline/settle.error_kind`` may return.
ERROR_KINDS = (
    "timeout",
    "rate_limited",
    "status_4xx",
    "status_5xx",
    "stream",
    "upstream_connect_failed",
    "upstream_unavailable",
    "bad_gateway",
    "error",
)
TOKEN_KINDS = ("prompt", "completion", "cached", "reasoning")
FALLBACK_REASONS = ("exhausted", "context_length")


def declare_series(groups: list[tuple[str, str]]) -> None:
    """Create known label sets at start-up so every metric shows up in /metrics at once.

    In multiprocess mode a labelled metric with no sample has no HELP/TYPE line;
    dashboards and alerts then see "no data" instead of zero. ``groups`` holds
    the (provider, model label) pairs knowable at start-up: each configured
    deployment's alias, and ``other`` (the ad-hoc overflow) per enabled provider.
    """
    for scope in RATE_LIMIT_SCOPES:
        llm_rate_limit_exceeded_total.labels(scope)
    aliases: set[str] = set()
    for provider, alias in groups:
        aliases.add(alias)
        for outcome in PROVIDER_OUTCOMES:
            llm_provider_requests_total.labels(provider, alias, outcome)
        for kind in ERROR_KINDS:
            llm_provider_errors_total.labels(provider, alias, kind)
        for kind in TOKEN_KINDS:
            llm_tokens_total.labels(provider, alias, kind)
        llm_provider_latency_seconds.labels(provider, alias)
        llm_time_to_first_token_seconds.labels(provider, alias)
        llm_upstream_attempts_total.labels(provider, alias)
        llm_retries_total.labels(provider, alias)
        llm_hedges_total.labels(provider, alias)
        llm_breaker_ejections_total.labels(provider, alias)
        llm_breaker_state.labels(provider, alias).set(0)
    for alias in aliases:
        for reason in FALLBACK_REASONS:
            llm_fallbacks_total.labels(alias, reason)
        llm_retry_budget_exhausted_total.labels(alias)
    declare_deployment_series(groups)


def declare_http_series(routes: dict[str, str]) -> None:
    """The HTTP families per route (``route -> method``): 200 and 500 everywhere, and 499
    (client closed) and the gateway's overhead where a request has a body."""
    for route, method in routes.items():
        statuses = ("200", "499", "500") if method == "POST" else ("200", "500")
        for status in statuses:
            http_requests_total.labels(method, route, status)
        http_request_duration_seconds.labels(method, route)
        if method == "POST":
            gateway_overhead_seconds.labels(route)


def declare_cache_series(aliases: list[str]) -> None:
    """The cache families per caching alias (``llm_cache_requests_total`` is declared by
    the cache itself)."""
    for alias in aliases:
        for scope in ("process", "replicas"):
            llm_cache_coalesced_total.labels(alias, scope)
        for kind in ("prompt", "completion"):
            llm_cache_tokens_saved_total.labels(alias, kind)


def memoize_all() -> None:
    """Called once at import: every labelled metric defined above gets cached children,
    and every metric's writes go through the batch."""
    for value in list(globals().values()):
        if isinstance(value, Counter | Gauge | Histogram):
            if value._labelnames:
                _memoize_labels(value)
            else:  # an unlabelled Counter or Histogram is its own child: batched too
                batch_child(value._type, value)


def record_speedups(impls: dict[str, str]) -> None:
    for kernel, impl in impls.items():
        gateway_speedups_info.labels(kernel, impl).set(1)


# -- response cache (pipeline/cache.py) --------------------------------------------------
llm_cache_requests_total = Counter(
    "llm_cache_requests_total",
    "Cache decisions for aliases with caching on: hit, miss, bypass (directives), error",
    ["model", "result"],
)
llm_cache_errors_total = Counter(
    "llm_cache_errors_total", "Cache store calls that failed or timed out", ["op"]
)
llm_cache_coalesced_total = Counter(
    "llm_cache_coalesced_total",
    "Requests answered by an identical in-flight request (single-flight)",
    ["model", "scope"],
)
llm_cache_tokens_saved_total = Counter(
    "llm_cache_tokens_saved_total",
    "Tokens of cached answers served without a provider call",
    ["model", "kind"],
)


# -- /v1/responses conversation state (pipeline/conversation.py) -------------------------
gateway_responses_state_total = Counter(
    "gateway_responses_state_total",
    "Conversation-state operations of /v1/responses by op (load, save, get, delete) "
    "and result (ok, missing, error, too_large)",
    ["op", "result"],
)


# -- shared state and rate limits (store/, pipeline/ratelimit.py) ------------------------
gateway_state_backend_up = Gauge(
    "gateway_state_backend_up",
    "1 while the shared state backend (Redis) answers; 0 while limits run on the fallback",
    multiprocess_mode="livemin",
)
gateway_state_fallbacks_total = Counter(
    "gateway_state_fallbacks_total",
    "Rate-limit decisions made without the shared state (timeout, error, down)",
    ["reason"],
)
gateway_ratelimit_seconds = Histogram(
    "gateway_ratelimit_seconds",
    "Time the rate limiter added to a request (reservation, fallback included)",
    buckets=_FAST_BUCKETS,
)


# -- routing and resilience (pipeline/attempts.py, routing.py, breaker.py) ----------------
llm_upstream_attempts_total = Counter(
    "llm_upstream_attempts_total",
    "Upstream attempts (first tries, retries, hedges and fallbacks alike)",
    ["provider", "model"],
)
llm_retries_total = Counter(
    "llm_retries_total", "Attempts that retried a failed one", ["provider", "model"]
)
llm_hedges_total = Counter(
    "llm_hedges_total", "Hedged attempts started because the first was slow", ["provider", "model"]
)
llm_fallbacks_total = Counter(
    "llm_fallbacks_total",
    "Requests moved to another alias (reason: exhausted | context_length)",
    ["model", "reason"],
)
llm_retry_budget_exhausted_total = Counter(
    "llm_retry_budget_exhausted_total", "Retries not made because of the retry budget", ["model"]
)
llm_breaker_state = Gauge(
    "llm_breaker_state",
    "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (worst of the label set)",
    ["provider", "model"],
    multiprocess_mode="livemax",
)
llm_breaker_ejections_total = Counter(
    "llm_breaker_ejections_total", "Times a breaker opened", ["provider", "model"]
)
llm_health_checks_total = Counter(
    "llm_health_checks_total",
    "Active health checks of ejected deployments (result: pass | fail | timeout)",
    ["provider", "model", "result"],
)


# -- cost and process resources (gateway/pricing.py, pipeline/settle.py; deployment/ alerts)
llm_cost_usd_total = Counter(
    "llm_cost_usd_total",
    "Estimated spend in USD at the deployment's price (config price:, else the shipped table)",
    ["provider", "model", "team"],  # team: an admin API team (capped, then other), or none
)
llm_unpriced_requests_total = Counter(
    "llm_unpriced_requests_total",
    "Requests with usage whose model has no known price (not counted in llm_cost_usd_total)",
    ["provider", "model"],
)
gateway_process_resident_memory_bytes = Gauge(
    "gateway_process_resident_memory_bytes",
    "Resident memory of the gateway's worker processes, summed over live workers",
    multiprocess_mode="livesum",
)
gateway_process_open_fds = Gauge(
    "gateway_process_open_fds",
    "Open file descriptors (sockets included) of the worker processes, summed",
    multiprocess_mode="livesum",
)
gateway_process_open_connections = Gauge(
    "gateway_process_open_connections",
    "Established TCP connections of the worker processes, summed: inbound (clients) "
    "or outbound (upstreams, Redis)",
    ["direction"],
    multiprocess_mode="livesum",
)
gateway_container_memory_working_set_bytes = Gauge(
    "gateway_container_memory_working_set_bytes",
    "The container's (cgroup's) memory use less inactive file cache, as the kubelet counts it",
    multiprocess_mode="livemax",
)
gateway_container_memory_limit_bytes = Gauge(
    "gateway_container_memory_limit_bytes",
    "The container's (cgroup's) memory limit; +Inf when it has none",
    multiprocess_mode="livemax",
)


gateway_trace_spans_dropped_total = Counter(
    "gateway_trace_spans_dropped_total",
    "Spans whose export to the OpenTelemetry collector failed (it is slow or down)",
)


def declare_deployment_series(groups: list[tuple[str, str]]) -> None:
    """Cost series for the configured (provider, alias) pairs, and the resource gauges
    (sampled now and every few seconds by a daemon thread, once per process)."""
    for provider, alias in groups:
        llm_cost_usd_total.labels(provider, alias, NO_TEAM)
        llm_unpriced_requests_total.labels(provider, alias)
    from gateway.telemetry import resources

    resources.start_sampler()


# -- tenants (gateway/tenants: budgets, sticky sessions) ---------------------------------
NO_TEAM = "none"
team_label = LabelGuard(50)  # teams come from the admin API: at most 50 team series
llm_budget_refusals_total = Counter(
    "llm_budget_refusals_total",
    "Requests refused because a USD budget had no room for their maximum cost",
    ["scope"],  # key | team
)
SESSION_RESULTS = ("hit", "moved", "new")
llm_session_affinity_total = Counter(
    "llm_session_affinity_total",
    "Sticky sessions: served where the session was (hit), elsewhere (moved), or first seen",
    ["model", "result"],
)


def declare_tenant_series(aliases: list[str], teams: bool) -> None:
    """Sessions per alias with two or more deployments; with virtual keys (``teams``), the
    team rate-limit scope and the budget refusals."""
    if teams:
        llm_rate_limit_exceeded_total.labels("team")
        for scope in ("key", "team"):
            llm_budget_refusals_total.labels(scope)
    for alias in aliases:
        for result in SESSION_RESULTS:
            llm_session_affinity_total.labels(alias, result)


memoize_all()


# -- the shipped redact plugin (plugins/redact.py); its stage holds its label children --
gateway_redactions_total = Counter(
    "gateway_redactions_total",
    "Prompt matches acted on by the redact plugin (action: redact | block; pattern: a name "
    "from the config)",
    ["action", "pattern"],
)


# -- shared-state mode changes (store/redis.py); defined last, after memoize_all: not hot --
gateway_state_mode_changes_total = Counter(
    "gateway_state_mode_changes_total",
    "Rate limits switching between the shared state and the local fallback (to: fallback|shared)",
    ["to"],
)
for _to in ("fallback", "shared"):
    gateway_state_mode_changes_total.labels(_to)


def flush() -> None:
    """Write out the batched metric writes now (the lifespan's last act)."""
    BATCH.flush()
