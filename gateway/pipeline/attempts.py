"""Stage ``attempts``: the loop over ``ctx.plan`` with retries, fallbacks, hedging and
one deadline per request.

For each deployment it tries, the endpoint's exchange builds the upstream request
and reads the answer (``Endpoint.exchange``: the group may mix providers); the
relay (``relay.py``) sends. The result is ``ctx.served``, a ``Served(dep, attempts,
result)``: the deployment that served, how many upstream attempts it took, and the
result (``(body, usage)`` or a stream committed at its first content event). A
failure raises the last ``GatewayError`` with ``x-gateway-attempts`` in its
headers. What a failure means (retry here, elsewhere, never, context-length;
breaker or not; how long to wait) is a field of the error (``classify.py``).

Semantics (Envoy's retry policy and outlier detection; nginx's "only before
anything was sent"):

* **What is retried.** A connection refused or reset before it reached the
  provider, always. After the request was sent: statuses 429, 500, 502, 503, 504,
  529; an answer the gateway could not use (reset, malformed JSON, a stream cut
  before its first content: the client would see a 502). Never another 4xx.
* **Moved on, never repeated.** A *timeout* (connect, a stream's
  ``timeout.first_token``, a whole answer's ``timeout.read``: a deployment that
  accepts and then hangs) and an upstream 401/403 (the gateway's own key refused)
  move to *another* deployment or the fallbacks, never to the same one: a hung
  deployment would spend the deadline again. A whole answer has no first token;
  its analogue is the response headers, which a provider sends once the whole
  answer is ready, so ``timeout.read`` is what bounds that wait.
* **Where.** The next deployment of the plan (made once, by stage ``route``; a
  fallback alias's when it is reached) not yet tried in this request (at once);
  when all were tried, the least-tried one again after a backoff:
  ``uniform(0, min(max_backoff, backoff * 2^n))`` (full jitter), and never before
  a 429's wait (``retry-after-ms``, ``Retry-After``, or the provider's reset
  headers: ``retry_after.py``). A deployment whose wait is longer
  than ``max_backoff`` or than what is left of the deadline is not retried at all;
  when no other is left, the client gets the 429 with ``Retry-After`` and
  ``retry-after-ms``.
* **Deadline.** ``retry.deadline`` (default ``DEFAULT_DEADLINE``, 90 s, or the
  group's longest ``timeout.total`` when shorter) bounds every attempt and wait
  together, fallbacks included: a stream until its first content, a whole answer
  to its end.
* **Budget.** Retries in flight (process-wide) never exceed
  ``retry_budget.ratio`` x requests in flight + ``retry_budget.min_retries``; past
  it the request fails with its last error instead of retrying.
* **Fallbacks.** When a group is exhausted, its ``fallbacks`` aliases are tried in
  order (then theirs), each with its own retry policy, under the same deadline. A
  context-length error goes to the alias's ``context_fallback`` instead.
* **Hedging.** With ``hedge.delay_ms``, an attempt with no first content (a whole
  answer, when not streaming) after the delay gets a twin on another deployment;
  the first to answer is served and the other is cancelled (its upstream response
  closed). Hedges count as retries for the budget.
* **Streams** are committed at the first content event (``relay.start_stream``);
  after that nothing is retried. With ``routing.stream_keepalive`` > 0, a stream
  still waiting after that many seconds is committed with status 200 and kept
  alive with ``: keep-alive`` SSE comments while retries continue; if they all
  fail, the stream ends with the error event (no ``[DONE]``). Its
  ``x-gateway-provider`` then names the deployment being waited on at that time.

The module is one algorithm (the loop, its hedge and its per-attempt bookkeeping
share one request's state), which is why it is longer than most.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.deadline import deadline
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.pipeline import placement, relay, settle
from gateway.pipeline.relay import PendingStream, StreamRelay
from gateway.pipeline.route import estimate_prompt_tokens, max_tokens_of
from gateway.telemetry import metrics
from gateway.telemetry.logging import DEBUG_LOG, upstream_attempt

if TYPE_CHECKING:
    from gateway.config import RetryPolicy
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.endpoint import Endpoint
    from gateway.pipeline.reply import Reply
    from gateway.providers.base import Deployment
    from gateway.providers.registry import ModelGroup
    from gateway.state import Gateway
    from gateway.telemetry.tracing import AttemptSpan

__all__ = ["Attempts", "Loop", "Served", "breaker_outcome"]

T = TypeVar("T")


@dataclass(slots=True)
class Served(Generic[T]):
    dep: Deployment
    attempts: int
    result: T
    ttft: float = 0.0  # streams: seconds from the first attempt to the commit


def breaker_outcome(err: GatewayError) -> str:
    """Does this failure count against the deployment's breaker? A client's 4xx never."""
    return "failure" if isinstance(err, UpstreamError) and err.breaker else "neutral"


class _Stop(Exception):
    """End the whole request now with ``err`` (not retryable, or out of budget)."""

    def __init__(self, err: GatewayError) -> None:
        self.err = err


class _ContextLength(Exception):
    def __init__(self, err: GatewayError) -> None:
        self.err = err


class Loop:
    """One request's walk over deployments and aliases."""

    def __init__(self, gw: Gateway, ctx: RequestContext) -> None:
        endpoint, group = ctx.endpoint, ctx.group
        assert endpoint is not None and group is not None
        self.router = router = gw.router
        self.groups = gw.registry.groups
        self.ctx = ctx
        self.endpoint: Endpoint = endpoint
        self.group = group
        self.plan = ctx.plan
        self.stream = ctx.stream
        self.lease = ctx.lease
        self.sizing = endpoint.sizing(ctx)  # OpenAI-chat view: prices, prompt estimate
        self.clock = router.clock
        self.t0 = self.clock()
        policy = self.policy(group)
        self.deadline = self.t0 + (policy.deadline or group.default_deadline)
        self.attempts = 0
        self.last_err: GatewayError | None = None
        self.last_dep: Deployment = ctx.plan[0] if ctx.plan else (ctx.dep or group.deployments[0])
        # A deployment refused by its own rate limits (``_admit``): when nothing served,
        # the request ends with that 429 (and its Retry-After).
        self.refused: tuple[GatewayError, Deployment] | None = None
        self._prompt_tokens: int | None = None
        self.debug = DEBUG_LOG.isEnabledFor(logging.DEBUG)

    def policy(self, group: ModelGroup) -> RetryPolicy:
        return group.retry or self.router.options.retry

    @property
    def prompt_tokens(self) -> int:
        if self._prompt_tokens is None:
            self._prompt_tokens = estimate_prompt_tokens(self.sizing)
        return self._prompt_tokens

    # -- the whole request: primary group, then fallbacks ------------------------------

    async def run(self) -> Served[Any]:
        router = self.router
        router.active.requests += 1
        try:
            queue: list[tuple[ModelGroup, str | None, str]] = [(self.group, None, "")]
            seen = {self.group.name}
            while queue:
                group, reason, came_from = queue.pop(0)
                if reason is not None:
                    metrics.llm_fallbacks_total.labels(came_from, reason).inc()
                try:
                    served = await self.run_group(group)
                except _ContextLength as cl:
                    target = group.context_fallback
                    if target is None or target in seen or target not in self.groups:
                        raise self.finish(cl.err) from None
                    seen.add(target)
                    queue = [(self.groups[target], "context_length", group.label)]
                    continue
                except _Stop as stop:
                    raise self.finish(stop.err) from None
                if served is not None:
                    if self.lease is not None:
                        self.lease.served = served.dep
                    self.ctx.provider = served.dep.provider
                    return served
                if self.clock() >= self.deadline:
                    break
                for fb in group.fallbacks:
                    if fb not in seen and fb in self.groups:
                        seen.add(fb)
                        queue.append((self.groups[fb], "exhausted", group.label))
            if self.refused is not None:
                err, self.last_dep = self.refused
                raise self.finish(err)
            raise self.finish(self.last_err or self.deadline_error(self.last_dep))
        finally:
            router.active.requests -= 1

    def finish(self, err: GatewayError) -> GatewayError:
        err.headers["x-gateway-attempts"] = str(self.attempts)
        err.headers.setdefault("x-gateway-provider", self.last_dep.provider)
        return err

    def deadline_error(self, dep: Deployment) -> UpstreamTimeout:
        total = self.deadline - self.t0
        return UpstreamTimeout(
            f"no answer from provider {dep.provider} within the request deadline ({total:g}s)",
            provider=dep.provider,
            code="deadline_exceeded",
            kind="deadline",
        )

    # -- one group ---------------------------------------------------------------------

    def _plan(self, group: ModelGroup) -> list[Deployment]:
        """The primary group's plan is the request's (stage ``route``); a fallback's is
        made when it is reached, kept to where the principal may go (``placement``)."""
        if group is self.group and (self.plan or placement.constrained(self.ctx.principal)):
            return self.plan
        plan = self.router.plan(
            group,
            stream=self.stream,
            prompt_tokens=self.prompt_tokens if group.strategy == "lowest-cost" else 0,
            max_tokens=max_tokens_of(self.sizing),
        )
        return placement.only_allowed(self.ctx.principal, plan)

    async def run_group(self, group: ModelGroup) -> Served[Any] | None:
        """Served, or None when the group is exhausted (its fallbacks may follow)."""
        policy = self.policy(group)
        plan = self._plan(group)
        tries: dict[Deployment, int] = {}
        not_again: set[Deployment] = set()
        pending: dict[asyncio.Task[Any], tuple[Deployment, float]] = {}
        n = 0
        waits = 0
        hedge = group.hedge_delay if len(plan) > 1 else None
        try:
            while True:
                if not pending:
                    if n >= policy.attempts:
                        return None
                    dep = self._next(plan, tries, not_again, policy, first=n == 0)
                    if dep is None:
                        return None
                    if self.attempts:  # a retry (or a fallback's first attempt)
                        wait = self._wait(dep, policy, tries.get(dep, 0) > 0, waits)
                        if wait is None:
                            return None
                        if wait > 0:
                            waits += 1
                            await asyncio.sleep(wait)
                        if not self._budget_ok(group):
                            raise _Stop(self.last_err or self.deadline_error(dep))
                    lease = self.lease
                    if (
                        lease is not None
                        and dep is not lease.dep
                        and not await self._admit(group, dep)
                    ):
                        not_again.add(dep)  # its provider quota is spent: as if ejected
                        continue
                    tries[dep] = tries.get(dep, 0) + 1
                    n += 1
                    if hedge is None:  # no twin possible: await the attempt inline
                        try:
                            if self.attempts:
                                result = await self._inline(dep, retry=True)
                            else:
                                self._count(dep, False)
                                result = await self._attempt(dep)
                        except GatewayError as exc:
                            self._failed(dep, exc, not_again)
                            continue
                        return Served(dep, self.attempts, result)
                    pending[self._launch(dep, retry=self.attempts > 0)] = (dep, self.clock())
                now = self.clock()
                timeout = self.deadline - now
                hedging = hedge is not None and len(pending) == 1 and n < policy.attempts
                if hedging:
                    (started,) = (s for _, s in pending.values())
                    timeout = min(timeout, started + hedge - now)  # type: ignore[operator]
                done, _ = await asyncio.wait(
                    pending, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    if self.clock() >= self.deadline:
                        dep = next(iter(pending.values()))[0]
                        raise _Stop(self.deadline_error(dep))
                    if hedging:
                        twin = await self._twin(group, plan, tries, not_again, pending, policy)
                        if twin is not None:
                            pending[self._launch(twin, retry=False, hedge=True)] = (
                                twin,
                                self.clock(),
                            )
                            tries[twin] = tries.get(twin, 0) + 1
                            n += 1
                        hedge = None  # one twin per request
                    continue
                for task in done:
                    dep, _ = pending.pop(task)
                    failure = task.exception()
                    if failure is None:
                        return Served(dep, self.attempts, task.result())
                    if not isinstance(failure, GatewayError):
                        raise failure
                    self._failed(dep, failure, not_again)
        finally:
            if pending:
                await self._cancel(pending)

    async def _twin(
        self,
        group: ModelGroup,
        plan: list[Deployment],
        tries: dict[Deployment, int],
        not_again: set[Deployment],
        pending: dict[asyncio.Task[Any], tuple[Deployment, float]],
        policy: RetryPolicy,
    ) -> Deployment | None:
        """The deployment a hedge goes to (admitted by its own limits), or None."""
        busy = {d for d, _ in pending.values()}
        twin = self._next(plan, tries, not_again | busy, policy, first=False)
        if twin is None or not self._budget_ok(group):
            return None
        while not await self._admit(group, twin):
            not_again.add(twin)
            twin = self._next(plan, tries, not_again | busy, policy, first=False)
            if twin is None:
                return None
        return twin

    async def _admit(self, group: ModelGroup, dep: Deployment) -> bool:
        """Reserve ``dep``'s own limits when it is not the deployment the lease was reserved
        for; False (the refusal kept for the request's end) when they are spent. (The
        callers skip it when there is no lease, or ``dep`` is the one it was made for.)"""
        lease = self.lease
        if lease is None or dep is lease.dep:
            return True
        try:
            await lease.limiter.reserve_deployment(self.ctx, lease, group, dep)
        except GatewayError as err:  # 429 (or 503: limits cannot be checked, policy closed)
            self.refused = (err, dep)
            return False
        return True

    def _failed(self, dep: Deployment, exc: GatewayError, not_again: set[Deployment]) -> None:
        """A failed attempt: raise to end the request, or return to retry. Only upstream
        errors are retried; anything else (a request no adapter can build) ends it."""
        self.last_err, self.last_dep = exc, dep
        retry = exc.retry if isinstance(exc, UpstreamError) else "never"
        if retry == "context":
            raise _ContextLength(exc)
        if retry == "never":
            raise _Stop(exc)
        if retry == "elsewhere":
            not_again.add(dep)
        wait = exc.retry_after if isinstance(exc, UpstreamError) else None
        if wait:
            self.router.cool_down(dep, wait)

    def _next(
        self,
        plan: list[Deployment],
        tries: dict[Deployment, int],
        exclude: set[Deployment],
        policy: RetryPolicy,
        first: bool,
    ) -> Deployment | None:
        """Untried before tried, usable (breaker, Retry-After) before not, plan order.
        A retry never goes to an ejected deployment, nor to one whose Retry-After asks for
        a longer wait than ``max_backoff`` or than what is left of the deadline."""
        router = self.router
        now = self.clock()
        longest = min(policy.max_backoff, self.deadline - now)
        best: tuple[int, int, int] | None = None
        choice = None
        for i, d in enumerate(plan):
            if d in exclude:
                continue
            st = router.state(d)
            if not first and (not st.breaker.available(now) or st.cooldown_until - now > longest):
                continue  # ejected, or asked to be left alone for longer than we wait
            key = (tries.get(d, 0), st.cooldown_until > now, i)
            if best is None or key < best:
                best, choice = key, d
        return choice

    def _wait(self, dep: Deployment, policy: RetryPolicy, again: bool, waits: int) -> float | None:
        """Seconds to wait before trying ``dep``; None: give up on this group."""
        now = self.clock()
        cooldown = self.router.state(dep).cooldown_until - now
        wait = 0.0
        if again:
            wait = self.router.jitter(min(policy.max_backoff, policy.backoff * 2**waits))
        if cooldown > 0:
            if cooldown > policy.max_backoff:
                return None  # the provider asks for longer than we wait: the 429 goes back
            wait = max(wait, cooldown)
        if now + wait >= self.deadline:
            return None
        return wait

    def _budget_ok(self, group: ModelGroup) -> bool:
        router = self.router
        b = router.options.retry_budget
        if router.active.retries + 1 <= b.ratio * router.active.requests + b.min_retries:
            return True
        metrics.llm_retry_budget_exhausted_total.labels(group.label).inc()
        return False

    def _count(self, dep: Deployment, retry: bool, hedge: bool = False) -> None:
        self.attempts += 1
        self.last_dep = dep
        ctx = self.ctx
        ctx.provider = dep.provider
        ctx.attempts = self.attempts
        metrics.llm_upstream_attempts_total.labels(dep.provider, dep.label).inc()
        if retry:
            metrics.llm_retries_total.labels(dep.provider, dep.label).inc()
        if hedge:
            metrics.llm_hedges_total.labels(dep.provider, dep.label).inc()

    async def _inline(self, dep: Deployment, *, retry: bool) -> Any:
        """A retry awaited in place (its first attempt the loop calls ``_attempt`` for)."""
        self._count(dep, retry)
        active = self.router.active
        active.retries += 1
        try:
            return await self._attempt(dep, "retry")
        finally:
            active.retries -= 1

    def _launch(self, dep: Deployment, *, retry: bool, hedge: bool = False) -> asyncio.Task[Any]:
        self._count(dep, retry, hedge)
        why = "hedge" if hedge else "retry" if retry else "first"
        task = asyncio.ensure_future(self._attempt(dep, why))
        if retry or hedge:  # counted from now (the budget is checked synchronously before)
            active = self.router.active
            active.retries += 1

            def done(_: asyncio.Task[Any]) -> None:
                active.retries -= 1

            task.add_done_callback(done)
        return task

    # -- one attempt -----------------------------------------------------------------

    async def _attempt(self, dep: Deployment, why: str = "first") -> Any:
        st = self.router.state(dep)
        probe = st.breaker.acquire()
        st.in_flight += 1
        outcome = "neutral"
        handed_off = False
        remaining = self.deadline - self.clock()
        trace = self.ctx.trace  # None unless tracing is on: one span per attempt
        span = None if trace is None else trace.attempt(dep, self._operation(), why)
        if self.debug:
            upstream_attempt(self.ctx, dep, why)
        try:
            if self.stream:
                result: Any = await self._stream(dep, remaining, probe, span)
                handed_off = True  # its close hook does the bookkeeping
            else:
                result = await self._whole(dep, remaining, span)
            outcome = "success"
            return result
        except GatewayError as err:
            outcome = breaker_outcome(err)
            if span is not None:
                span.error = err
            if isinstance(err, UpstreamError):
                settle.record_failure(dep, err, ctx=self.ctx)
            raise
        except asyncio.CancelledError:  # the client left, or a hedged twin lost
            if span is not None:
                span.cancelled = True
            settle.record_cancelled(dep, None)
            raise
        finally:
            if not handed_off:
                st.in_flight -= 1
                st.breaker.record(outcome, probe)
                if span is not None:
                    span.end()

    def _operation(self) -> str:
        return "embeddings" if self.endpoint.name == "embeddings" else "chat"

    async def _whole(self, dep: Deployment, remaining: float, span: AttemptSpan | None) -> Any:
        exchange = self.endpoint.exchange(dep)
        t0 = time.perf_counter()
        request = exchange.request(dep, self.ctx)
        if span is not None:
            span.inject(request)
        try:
            with deadline(remaining):
                _resp, content = await relay.complete(dep, request)
                result = exchange.response(dep, self.ctx, content)
        except TimeoutError:
            raise self.deadline_error(dep) from None
        self.router.state(dep).observe(total=time.perf_counter() - t0)
        if span is not None:
            span.usage = result[1]
        return result

    async def _stream(
        self, dep: Deployment, remaining: float, probe: bool, span: AttemptSpan | None
    ) -> StreamRelay:
        exchange = self.endpoint.exchange(dep)
        t = dep.timeouts
        limit = min(t.first_token, remaining)
        request = exchange.request(dep, self.ctx)
        if span is not None:
            span.inject(request)
        try:
            with deadline(limit):
                r, ttft = await relay.start_stream(
                    dep,
                    request,
                    exchange.translator(dep, self.ctx),
                    idle=t.idle,
                    total=t.total,
                )
        except TimeoutError:
            if limit < t.first_token:
                raise self.deadline_error(dep) from None
            raise UpstreamTimeout(
                f"provider {dep.provider} sent no first token within {t.first_token:g}s",
                provider=dep.provider,
                code="first_token_timeout",
                kind="first_token",
            ) from None
        st = self.router.state(dep)
        st.observe(ttft=ttft)
        st.breaker.record("success", probe)
        sent = time.perf_counter() - ttft

        def closed(r: StreamRelay) -> None:
            st.in_flight -= 1
            if r.error is not None:
                st.breaker.record(breaker_outcome(r.error))
            elif r.completed:
                st.observe(total=time.perf_counter() - sent)
            if r.translator.usage is None and r.content_frames:
                r.prompt_tokens = self.prompt_tokens  # what a broken stream settles
            if span is not None:
                span.error, span.usage = r.error, r.usage
                span.end()

        r.add_close_hook(closed)
        return r

    async def _cancel(self, pending: dict[asyncio.Task[Any], tuple[Deployment, float]]) -> None:
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in pending:
            # a twin that committed just as the winner did: close it quietly
            if not task.cancelled() and task.exception() is None:
                loser = task.result()
                if isinstance(loser, StreamRelay):
                    await loser.aclose()
        pending.clear()


class Attempts:
    """Stage ``attempts``: the loop over ``ctx.plan``; ``ctx.served`` is its result. A
    stream that waits longer than ``routing.stream_keepalive`` for its first content is
    committed as a ``PendingStream`` that sends keep-alives while the loop goes on."""

    name = "attempts"

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.keepalive = gw.router.options.stream_keepalive

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        endpoint, dep = ctx.endpoint, ctx.dep
        assert endpoint is not None and dep is not None
        local = endpoint.local(ctx, dep)
        if local is not None:  # the gateway answers this one itself
            ctx.served = Served(dep, 0, (local, None))
            return None
        loop = Loop(self.gw, ctx)
        t0 = time.perf_counter()
        if not ctx.stream:
            served = await loop.run()
            ctx.upstream_s = time.perf_counter() - t0
        elif not self.keepalive:
            served = await loop.run()
            served.ttft = ctx.ttft_s = time.perf_counter() - t0
        else:
            task = asyncio.ensure_future(loop.run())
            try:
                done, _ = await asyncio.wait({task}, timeout=self.keepalive)
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise
            if done:
                served = task.result()
            else:
                pending = PendingStream(task, lambda: loop.last_dep, self.keepalive)
                served = Served(loop.last_dep, loop.attempts, pending)
            served.ttft = ctx.ttft_s = time.perf_counter() - t0
        ctx.served = served
        ctx.dep = served.dep
        ctx.provider = served.dep.provider
        ctx.attempts = served.attempts
        return None
