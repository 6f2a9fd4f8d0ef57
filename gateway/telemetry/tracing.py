"""OpenTelemetry tracing, on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Off (no endpoint), this module is never imported and nothing on the request path
changes: the edge checks one attribute (``Edge.tracer is None``), the stages are
the untraced objects, and ``ctx.trace`` stays None. On, it uses the official SDK
(``opentelemetry-sdk``) and the OTLP/HTTP exporter, configured by the standard
variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` and ``_ARG``; the SDK reads the other ``OTEL_*`` ones, such
as ``OTEL_EXPORTER_OTLP_HEADERS`` and ``OTEL_BSP_*``, itself). Each Granian worker
builds its own provider and exporter.

Spans of one request::

    SERVER   "POST /v1/chat/completions"   the edge: the whole request, a stream to its end
      INTERNAL "gateway.parse" | "gateway.cache" | "gateway.limit" | "gateway.attempts"
               and every operator plugin: the stages that can take time
        CLIENT "chat gpt-4o"               each upstream attempt, under gateway.attempts:
                                           retries, hedges and fallbacks are siblings

Attributes follow the OpenTelemetry GenAI and HTTP semantic conventions
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens``/``output_tokens``,
``gen_ai.response.finish_reasons``, ``http.response.status_code``, ...), plus
``gateway.*`` ones (request id, cache outcome, why an attempt was made). Prompt and
completion text are never put on a span.

A client's W3C ``traceparent`` (and ``tracestate``) is continued; each upstream
request carries a ``traceparent`` naming its attempt span, added to that request
alone (the deployment's precomputed headers are not touched). The trace id is in
the ``x-trace-id`` response header and the access line.

Export is batched and asynchronous (``BatchSpanProcessor``: a queue and a thread):
a request only appends to the queue; a slow or dead collector fills the queue,
after which spans are dropped (``gateway_trace_spans_dropped_total`` counts failed
exports' spans), never a request slowed or failed. At shutdown the queue is flushed
for at most ``FLUSH_S`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as samplers
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.pipeline.run import call
from gateway.providers.transport import set_header

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx
    from litestar.types import Scope
    from opentelemetry.sdk.trace import ReadableSpan

    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.reply import Reply
    from gateway.pipeline.run import Stage
    from gateway.providers.base import Deployment
    from gateway.settings import Tracing

__all__ = ["TRACED_STAGES", "AttemptSpan", "RequestTrace", "Tracer"]

FLUSH_S = 3.0
# Core stages worth a span (the others take microseconds); plugins always get one.
TRACED_STAGES = frozenset({"parse", "cache", "limit", "attempts"})
CORE_STAGES = frozenset(
    {"parse", "auth", "cache", "route", "limit", "attempts", "settle", "respond"}
)
# gen_ai.provider.name values of the semantic conventions
PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "mock": "mock",
}
OPERATIONS = {"chat": "chat", "messages": "chat", "embeddings": "embeddings"}
_FINISH = re.compile(rb'"(?:finish|stop)_reason":\s*"([A-Za-z_]{1,40})"')
_REQUEST_NUMBERS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
)


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Answer(msgspec.Struct):
    model: str | None = None
    choices: list[_Choice] = []
    stop_reason: str | None = None  # Anthropic's


_answer = msgspec.json.Decoder(_Answer)


def _sampler(cfg: Tracing) -> samplers.Sampler:
    ratio = samplers.TraceIdRatioBased(cfg.sampler_arg)
    base: samplers.Sampler = {
        "always_on": samplers.ALWAYS_ON,
        "always_off": samplers.ALWAYS_OFF,
        "traceidratio": ratio,
    }.get(cfg.sampler.removeprefix("parentbased_"), samplers.ALWAYS_ON)
    if cfg.sampler.startswith("parentbased_"):
        return samplers.ParentBased(base)
    return base


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting the spans of exports that failed (a dead collector)."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            # imported here: the supervisor's start-up check (``check``) must not import
            # prometheus_client before PROMETHEUS_MULTIPROC_DIR is set for the workers
            from gateway.telemetry import metrics

            metrics.gateway_trace_spans_dropped_total.inc(len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class Tracer:
    """This worker's tracer provider, exporter and the request span's life."""

    def __init__(self, cfg: Tracing, exporter: SpanExporter | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        resource = Resource.create({**cfg.resource_attributes, "service.name": cfg.service_name})
        self._provider = TracerProvider(resource=resource, sampler=_sampler(cfg))
        inner = exporter or OTLPSpanExporter(endpoint=cfg.endpoint)
        self._processor = BatchSpanProcessor(_CountingExporter(inner))
        self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("llm-gateway", __version__)
        self._propagator = TraceContextTextMapPropagator()
        # A full queue (the collector is down) is counted, not logged once per span.
        logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)

    # -- the server span (the edge) -------------------------------------------------------

    def start(self, ctx: RequestContext, scope: Scope) -> None:
        carrier: dict[str, str] = {}
        for k, v in scope["headers"]:
            if k in (b"traceparent", b"tracestate"):
                carrier[k.decode()] = v.decode("latin-1")
        parent = self._propagator.extract(carrier) if carrier else None
        span = self._tracer.start_span(
            f"{ctx.method} {ctx.route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": ctx.method,
                "http.route": ctx.route,
                "url.path": scope["path"][:256],
                "gateway.request_id": ctx.request_id,
            },
        )
        ctx.trace = RequestTrace(self._tracer, span)

    def end(self, ctx: RequestContext, status: int) -> None:
        t = ctx.trace
        assert t is not None
        span = t.span
        if span.is_recording():
            span.set_attributes(_request_attributes(ctx, status))
            if t.finish_reasons:
                span.set_attribute("gen_ai.response.finish_reasons", t.finish_reasons)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, ctx.error or str(status)))
        span.end()

    # -- stage spans (Pipeline) -----------------------------------------------------------

    def traced(self, stage: Stage) -> Stage:
        """``stage`` with a span, for the stages that take time; others as they are."""
        if stage.name in CORE_STAGES and stage.name not in TRACED_STAGES:
            return stage
        return _TracedStage(stage)

    async def shutdown(self) -> None:
        """Flush what is queued, for at most ``FLUSH_S``: a dead collector must not hold
        the exit. (A daemon thread: the interpreter's exit never waits for it.)"""
        done = threading.Event()
        # BatchSpanProcessor.shutdown() takes no timeout (30 s); its inner one does.
        inner = getattr(self._processor, "_batch_processor", None)

        def flush() -> None:
            try:
                if inner is not None:
                    inner.shutdown(int(FLUSH_S * 1000))
                else:  # pragma: no cover - another SDK layout
                    self._processor.shutdown()  # type: ignore[no-untyped-call]
            finally:
                done.set()

        threading.Thread(target=flush, name="gateway-trace-flush", daemon=True).start()
        await asyncio.to_thread(done.wait, FLUSH_S + 1.0)


def check(cfg: Tracing) -> str | None:
    """Build (and drop) what ``Tracer`` builds, so a bad ``OTEL_*`` variable the SDK reads
    itself stops ``llm-gateway serve`` at start-up, not every worker in a loop."""

    class _Nothing(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    try:
        tracer = Tracer(cfg, exporter=_Nothing())
    except ValueError as exc:
        return f"OpenTelemetry settings (OTEL_*): {exc}"
    tracer._processor.shutdown()  # type: ignore[no-untyped-call]
    return None


class RequestTrace:
    """One request's spans: the server span, and what its children need."""

    __slots__ = ("attempts_span", "finish_reasons", "span", "tracer")

    def __init__(self, tracer: trace.Tracer, span: trace.Span) -> None:
        self.tracer = tracer
        self.span = span
        self.attempts_span: trace.Span | None = None
        self.finish_reasons: list[str] = []

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def child(
        self, name: str, kind: SpanKind, parent: trace.Span | None = None, **attrs: Any
    ) -> trace.Span:
        context = trace.set_span_in_context(parent or self.span)
        return self.tracer.start_span(name, context=context, kind=kind, attributes=attrs)

    # -- upstream attempts (attempts.Loop._attempt) -----------------------------------------

    def attempt(self, dep: Deployment, operation: str, why: str) -> AttemptSpan:
        model = dep.model
        span = self.child(
            f"{operation} {model}",
            SpanKind.CLIENT,
            self.attempts_span,
            **{
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": PROVIDER_NAMES.get(dep.provider, dep.provider),
                "gen_ai.request.model": model,
                "server.address": _host(dep.base_url),
                "gateway.model_alias": dep.label,
                "gateway.attempt.reason": why,
            },
        )
        return AttemptSpan(span)

    def watch_finish(self, frames: bytes) -> None:
        """A stream's finish reasons, from the frames relayed (an observer)."""
        if b"_reason" in frames:
            for m in _FINISH.finditer(frames):
                reason = m.group(1).decode()
                if reason not in self.finish_reasons:
                    self.finish_reasons.append(reason)


class AttemptSpan:
    """One upstream attempt's span; the attempt loop sets what it learnt, then ends it."""

    __slots__ = ("cancelled", "error", "span", "usage")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.error: BaseException | None = None
        self.usage: Any = None
        self.cancelled = False

    def inject(self, request: httpx.Request) -> None:
        """This attempt's ``traceparent`` on its upstream request (W3C trace context),
        set on that request alone: the deployment's precomputed headers stay as they are."""
        sc = self.span.get_span_context()
        flags = int(sc.trace_flags)
        set_header(request, "traceparent", f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{flags:02x}")

    def end(self) -> None:
        span, err, usage = self.span, self.error, self.usage
        if span.is_recording():
            if usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            if self.cancelled:  # a hedge that lost, or a client that left
                span.set_attribute("gateway.attempt.outcome", "cancelled")
            elif err is not None:
                status = getattr(err, "upstream_status", None) or getattr(err, "status", 0)
                if status:
                    span.set_attribute("http.response.status_code", status)
                span.set_attribute("error.type", getattr(err, "code", None) or type(err).__name__)
                span.set_attribute("gateway.attempt.retry", str(getattr(err, "retry", "never")))
                span.set_status(Status(StatusCode.ERROR, getattr(err, "type", "")))
                span.set_attribute("gateway.attempt.outcome", "error")
            else:
                span.set_attribute("gateway.attempt.outcome", "success")
        span.end()


class _TracedStage:
    """A stage inside its own span (only built when tracing is on)."""

    __slots__ = ("_stage", "name")

    def __init__(self, stage: Stage) -> None:
        self._stage = stage
        self.name = stage.name

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        t = ctx.trace
        if t is None:
            return await call(self._stage, ctx)
        name = self.name
        span = t.child(f"gateway.{name}", SpanKind.INTERNAL)
        if name == "attempts":
            t.attempts_span = span
        try:
            reply = await call(self._stage, ctx)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
            raise
        finally:
            span.end()
        if name == "attempts" and ctx.served is not None:
            result = ctx.served.result
            if ctx.stream:
                result.observe(t.watch_finish)
            elif isinstance(result, tuple) and isinstance(result[0], bytes):
                t.finish_reasons.extend(_finish_reasons(result[0]))
        return reply


def _finish_reasons(body: bytes) -> list[str]:
    try:
        answer = _answer.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
    reasons = [c.finish_reason for c in answer.choices if c.finish_reason]
    if answer.stop_reason:
        reasons.append(answer.stop_reason)
    return list(dict.fromkeys(reasons))


def _host(base_url: str) -> str:
    return base_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]


def _request_attributes(ctx: RequestContext, status: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {"http.response.status_code": status}
    endpoint = ctx.endpoint
    if endpoint is not None and endpoint.name in OPERATIONS:
        attrs["gen_ai.operation.name"] = OPERATIONS[endpoint.name]
    if ctx.model:
        attrs["gen_ai.request.model"] = ctx.model[:200]
        attrs["gen_ai.request.stream"] = ctx.stream
    if ctx.label is not None:
        attrs["gateway.model_alias"] = ctx.label
    for field, name in _REQUEST_NUMBERS:
        value = ctx.body.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attrs[name] = value
    dep = ctx.dep
    if ctx.provider is not None and dep is not None:
        attrs["gen_ai.provider.name"] = PROVIDER_NAMES.get(ctx.provider, ctx.provider)
        attrs["gen_ai.response.model"] = dep.model
        attrs["gateway.attempts"] = ctx.attempts
    usage = ctx.usage
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if ctx.cache is not None:
        attrs["gateway.cache"] = ctx.cache.status
    if ctx.error is not None:
        attrs["error.type"] = ctx.error
    return attrs
