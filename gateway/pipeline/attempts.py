"""Stages 4-6 under failure: retries, fallbacks, hedging and one deadline per request.

``complete()`` and ``stream()`` take a model group and callables that build the
upstream request and read the answer for any deployment (the group may mix
providers), and return ``Served(dep, attempts, result)``: the deployment that
served, how many upstream attempts it took, and the result (``(body, usage)`` or a
``StreamRelay`` committed at its first content event). A failure raises the last
``GatewayError`` with ``x-gateway-attempts`` in its headers.

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
* **Where.** The next deployment of the router's plan not yet tried in this
  request (at once, no wait); when all were tried, the least-tried one again after
  a backoff: ``uniform(0, min(max_backoff, backoff * 2^n))`` (full jitter), and
  never before a 429's wait (``retry-after-ms``, ``Retry-After``, or the
  provider's reset headers: ``retry_after.py``). A deployment whose wait is longer
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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from gateway.config import DEFAULT_DEADLINE
from gateway.errors import (
    GatewayError,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.pipeline import relay, settle
from gateway.pipeline.relay import StreamRelay
from gateway.pipeline.retry_after import wait_from
from gateway.pipeline.route import estimate_prompt_tokens, max_tokens_of
from gateway.providers.base import Deployment, StreamTranslator
from gateway.telemetry import metrics
from gateway.wire.chat import Usage

if TYPE_CHECKING:
    from gateway.config import RetryPolicy
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.lease import Lease
    from gateway.pipeline.reply import Reply
    from gateway.pipeline.routing import Router
    from gateway.providers.registry import ModelGroup
    from gateway.state import Gateway

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
KEEPALIVE_FRAME = b": keep-alive\n\n"
# How providers say "the prompt does not fit the context window" (lower case).
CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "context_window",
    "maximum context",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "exceeds the maximum number of tokens",
    "input token count",
    "reduce the length of the messages",
)


@dataclass(slots=True)
class Served(Generic[T]):
    dep: Deployment
    attempts: int
    result: T
    ttft: float = 0.0  # streams: seconds from the first attempt to the commit


def is_context_error(err: GatewayError) -> bool:
    if not isinstance(err, UpstreamStatus) or err.upstream_status not in (400, 413, 422):
        return False
    text = f"{err.code or ''} {err.type or ''} {err.message}".lower()
    return any(m in text for m in CONTEXT_MARKERS)


def classify(err: GatewayError) -> str:
    """``retry``: any deployment, the same one included; ``elsewhere``: another deployment
    only (the gateway's key refused, a timeout); ``final``: not a deployment's fault and
    not retried (a client's 4xx, the request's deadline); ``context``: a context-length
    error."""
    if getattr(err, "deadline", False):
        return "final"
    if isinstance(err, UpstreamTimeout):
        # A connect timeout, a stream's first-token timeout, a whole answer's read timeout:
        # this deployment is hanging; repeating it would spend the deadline on it again.
        return "elsewhere"
    if getattr(err, "connect_failed", False):
        return "retry"  # refused or unreachable at once: cheap to try again later
    if isinstance(err, UpstreamStatus):
        s = err.upstream_status
        if s in RETRY_STATUSES:
            return "retry"
        if s in (401, 403):
            return "elsewhere"
        if 400 <= s < 500:
            return "context" if is_context_error(err) else "final"
        return "elsewhere"  # 501, 505...: this deployment cannot serve it
    if isinstance(err, UpstreamUnavailable | UpstreamError):
        return "retry"  # reset, malformed answer, stream cut before its first content
    return "final"


def breaker_outcome(err: GatewayError) -> str:
    """Does this failure count against the deployment's breaker? A client's 4xx never."""
    if getattr(err, "deadline", False):
        return "neutral"
    return "neutral" if classify(err) in ("final", "context") else "failure"


def retry_after(err: GatewayError) -> float | None:
    """Seconds the upstream asked for (``retry_after.wait_from``; a 429's reset headers
    were already turned into ``retry-after-ms`` by the provider's ``map_error``)."""
    return wait_from(err.headers)


class _Stop(Exception):
    """End the whole request now with ``err`` (not retryable, or out of budget)."""

    def __init__(self, err: GatewayError) -> None:
        self.err = err


class _ContextLength(Exception):
    def __init__(self, err: GatewayError) -> None:
        self.err = err


class _Run:
    """One request's walk over deployments and aliases."""

    def __init__(
        self,
        gw: Gateway,
        group: ModelGroup,
        body: dict[str, Any],
        attempt: Callable[[Deployment, float, bool], Any],
        stream: bool,
        info: Any,
        first: Deployment | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.router: Router = gw.router
        self.first = first
        self.lease = lease
        self.groups = gw.registry.groups
        self.group = group
        self.body = body
        self.attempt_fn = attempt
        self.stream = stream
        self.info = info
        self.clock = self.router.clock
        self.t0 = self.clock()
        policy = self.policy(group)
        self.deadline = self.t0 + (
            policy.deadline
            or min(DEFAULT_DEADLINE, max(d.timeouts.total for d in group.deployments))
        )
        self.attempts = 0
        self.last_err: GatewayError | None = None
        self.last_dep: Deployment = group.deployments[0]
        # A deployment refused by its own rate limits (``_admit``): when nothing served,
        # the request ends with that 429 (and its Retry-After).
        self.refused: tuple[GatewayError, Deployment] | None = None
        self._prompt_tokens: int | None = None

    def policy(self, group: ModelGroup) -> RetryPolicy:
        return group.retry or self.router.options.retry

    @property
    def prompt_tokens(self) -> int:
        if self._prompt_tokens is None:
            self._prompt_tokens = estimate_prompt_tokens(self.body)
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
                    if self.info is not None:
                        self.info.provider = served.dep.provider
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
        err = UpstreamTimeout(
            f"no answer from provider {dep.provider} within the request deadline ({total:g}s)",
            provider=dep.provider,
            code="deadline_exceeded",
        )
        err.deadline = True  # type: ignore[attr-defined]
        return err

    # -- one group ---------------------------------------------------------------------

    async def run_group(self, group: ModelGroup) -> Served[Any] | None:
        """Served, or None when the group is exhausted (its fallbacks may follow)."""
        router = self.router
        policy = self.policy(group)
        plan = router.plan(
            group,
            stream=self.stream,
            prompt_tokens=self.prompt_tokens if group.strategy == "lowest-cost" else 0,
            max_tokens=max_tokens_of(self.body),
        )
        if group is self.group and self.first is not None and self.first in plan:
            plan.remove(self.first)  # the deployment the caller already chose (and reserved)
            plan.insert(0, self.first)
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
                    if not await self._admit(group, dep):
                        not_again.add(dep)  # its provider quota is spent: as if ejected
                        continue
                    tries[dep] = tries.get(dep, 0) + 1
                    n += 1
                    if hedge is None:  # no twin possible: await the attempt inline
                        try:
                            result = await self._inline(dep, retry=self.attempts > 0)
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
                        busy = {d for d, _ in pending.values()}
                        twin = self._next(plan, tries, not_again | busy, policy, first=False)
                        if twin is None or not self._budget_ok(group):
                            hedge = None
                            continue
                        while not await self._admit(group, twin):
                            not_again.add(twin)
                            twin = self._next(plan, tries, not_again | busy, policy, first=False)
                            if twin is None:
                                break
                        if twin is None:
                            hedge = None
                            continue
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
            await self._cancel(pending)

    async def _admit(self, group: ModelGroup, dep: Deployment) -> bool:
        """Reserve ``dep``'s own limits when it is not the deployment the lease was reserved
        for; False (the refusal kept for the request's end) when they are spent."""
        lease = self.lease
        if lease is None or dep is lease.dep:
            return True
        try:
            await lease.limiter.reserve_deployment(self.info, lease, group, dep)
        except GatewayError as err:  # 429 (or 503: limits cannot be checked, policy closed)
            self.refused = (err, dep)
            return False
        return True

    def _failed(self, dep: Deployment, exc: GatewayError, not_again: set[Deployment]) -> None:
        """A failed attempt: raise to end the request, or return to retry."""
        self.last_err, self.last_dep = exc, dep
        kind = classify(exc)
        if kind == "context":
            raise _ContextLength(exc)
        if kind == "final":
            raise _Stop(exc)
        if kind == "elsewhere":
            not_again.add(dep)
        ra = retry_after(exc)
        if ra:
            self.router.cool_down(dep, ra)

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
            cap = min(policy.max_backoff, policy.backoff * 2**waits)
            wait = self.router._rng.uniform(0.0, cap)
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
        if self.info is not None:
            self.info.provider = dep.provider
            self.info.attempts = self.attempts
        metrics.llm_upstream_attempts_total.labels(dep.provider, dep.label).inc()
        if retry:
            metrics.llm_retries_total.labels(dep.provider, dep.label).inc()
        if hedge:
            metrics.llm_hedges_total.labels(dep.provider, dep.label).inc()

    async def _inline(self, dep: Deployment, *, retry: bool) -> Any:
        self._count(dep, retry)
        if not retry:
            return await self._attempt(dep)
        active = self.router.active
        active.retries += 1
        try:
            return await self._attempt(dep)
        finally:
            active.retries -= 1

    def _launch(self, dep: Deployment, *, retry: bool, hedge: bool = False) -> asyncio.Task[Any]:
        self._count(dep, retry, hedge)
        task = asyncio.ensure_future(self._attempt(dep))
        if retry or hedge:  # counted from now (the budget is checked synchronously before)
            active = self.router.active
            active.retries += 1

            def done(_: asyncio.Task[Any]) -> None:
                active.retries -= 1

            task.add_done_callback(done)
        return task

    async def _attempt(self, dep: Deployment) -> Any:
        router = self.router
        st = router.state(dep)
        probe = st.breaker.acquire()
        st.in_flight += 1
        outcome = "neutral"
        handed_off = False
        try:
            result = await self.attempt_fn(dep, self.deadline - self.clock(), probe)
            outcome = "success"
            handed_off = self.stream
            return result
        except GatewayError as err:
            outcome = breaker_outcome(err)
            if isinstance(err, UpstreamError):
                settle.record_failure(dep, err)
            raise
        except asyncio.CancelledError:  # the client left, or a hedged twin lost
            settle.record_cancelled(dep, None)
            raise
        finally:
            if not handed_off:
                st.in_flight -= 1
                st.breaker.record(outcome, probe)

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


# -- the two entry points -----------------------------------------------------------------


async def complete(
    gw: Gateway,
    group: ModelGroup,
    body: dict[str, Any],
    build: Callable[[Deployment], httpx.Request],
    parse: Callable[[Deployment, bytes], tuple[bytes, Usage | None]],
    *,
    first: Deployment | None = None,
    info: Any = None,
    lease: Lease | None = None,
) -> Served[tuple[bytes, Usage | None]]:
    """A whole answer from the group (or its fallbacks): ``(body, usage)``."""
    router = gw.router

    async def attempt(dep: Deployment, remaining: float, probe: bool) -> Any:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                _resp, content = await relay.complete(dep, build(dep))
                result = parse(dep, content)
        except TimeoutError:
            raise run.deadline_error(dep) from None
        router.state(dep).observe(total=time.perf_counter() - t0)
        return result

    run = _Run(gw, group, body, attempt, False, info, first, lease)
    return await run.run()


async def stream(
    gw: Gateway,
    group: ModelGroup,
    body: dict[str, Any],
    build: Callable[[Deployment], httpx.Request],
    translator: Callable[[Deployment], StreamTranslator],
    *,
    first: Deployment | None = None,
    info: Any = None,
    lease: Lease | None = None,
) -> Served[Any]:
    """A stream committed at its first content event; ``add_close_hook(hook)`` on the
    result runs ``hook(r)`` once when it ends (``r.error``, ``r.completed``, ``r.usage``,
    ``r.dep``)."""
    router = gw.router

    async def attempt(dep: Deployment, remaining: float, probe: bool) -> Any:
        t = dep.timeouts
        limit = min(t.first_token, remaining)
        try:
            async with asyncio.timeout(max(0.0, limit)):
                r, ttft = await relay.start_stream(
                    dep, build(dep), translator(dep), None, idle=t.idle, total=t.total
                )
        except TimeoutError:
            if limit < t.first_token:
                raise run.deadline_error(dep) from None
            err = UpstreamTimeout(
                f"provider {dep.provider} sent no first token within {t.first_token:g}s",
                provider=dep.provider,
                code="first_token_timeout",
            )
            err.first_token = True  # type: ignore[attr-defined]
            raise err from None
        st = router.state(dep)
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
                r.prompt_tokens = run.prompt_tokens  # what a broken stream settles

        r.add_close_hook(closed)
        return r

    run = _Run(gw, group, body, attempt, True, info, first, lease)
    keepalive = router.options.stream_keepalive
    t0 = time.perf_counter()
    if not keepalive:
        served = await run.run()
        served.ttft = time.perf_counter() - t0
        return served
    task = asyncio.ensure_future(run.run())
    done, _ = await asyncio.wait({task}, timeout=keepalive)
    if done:
        served = task.result()
        served.ttft = time.perf_counter() - t0
        return served
    pending = PendingStream(task, run, keepalive)
    return Served(run.last_dep, run.attempts, pending, time.perf_counter() - t0)


class PendingStream:
    """A stream committed (status 200 sent) before its first content, to send keep-alive
    comments while the attempt loop still runs; it then relays the winner's frames, or
    ends with the error event. Reads like a ``StreamRelay``."""

    def __init__(self, task: asyncio.Future[Served[Any]], run: _Run, interval: float) -> None:
        self._task = task
        self._run = run
        self._interval = interval
        self.inner: StreamRelay | None = None
        self._error: GatewayError | None = None
        self.dep = run.last_dep
        self.client_gone = True
        self.error_event: Callable[[GatewayError], bytes] = relay.error_frame
        self._observers: list[Callable[[bytes], Any]] = []
        self._hooks: list[Callable[[Any], Any]] = []

    @property
    def error(self) -> GatewayError | None:
        return self.inner.error if self.inner is not None else self._error

    @property
    def completed(self) -> bool:
        return self.inner.completed if self.inner is not None else False

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage if self.inner is not None else None

    def observe(self, observer: Callable[[bytes], Any]) -> None:
        self._observers.append(observer)

    def add_close_hook(self, hook: Callable[[Any], Any]) -> None:
        self._hooks.append(hook)

    def _adopt(self, inner: StreamRelay) -> None:
        """The winner: it relays from now on, with everything attached to this stream."""
        self.inner = inner
        inner.error_event = self.error_event
        for observer in self._observers:
            inner.observe(observer)
        for hook in self._hooks:
            inner.add_close_hook(hook)
        self._hooks = []

    async def frames(self) -> AsyncIterator[bytes]:
        task = self._task
        try:
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=self._interval)
                if not done:
                    yield KEEPALIVE_FRAME
            try:
                served = task.result()
            except GatewayError as err:
                self._error = err
                self.dep = self._run.last_dep
                yield self.error_event(err)
                self.client_gone = False
                return
            self.dep = served.dep
            self._adopt(served.result)
            assert self.inner is not None
            async for frame in self.inner.frames():
                yield frame
            self.client_gone = self.inner.client_gone
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        task = self._task
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.inner is not None:
            await self.inner.aclose()
            return
        if not task.cancelled() and task.exception() is None:
            # served just as the client went away: close the winner's upstream
            self._adopt(task.result().result)
            assert self.inner is not None
            await self.inner.aclose()
            return
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook(self)


class Attempts:
    """Stage ``attempts``: the loop above over ``ctx.plan``, building each upstream request
    with the endpoint's exchange for that deployment. ``ctx.served`` is the result."""

    name = "attempts"

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        endpoint, group, dep = ctx.endpoint, ctx.group, ctx.dep
        assert endpoint is not None and group is not None and dep is not None
        local = endpoint.local(ctx, dep)
        if local is not None:  # the gateway answers this one itself
            ctx.served = Served(dep, 0, (local, None))
            return None
        sizing = endpoint.sizing(ctx)

        def build(d: Deployment) -> httpx.Request:
            return endpoint.exchange(d).request(d, ctx)

        t0 = time.perf_counter()
        served: Served[Any]
        if not ctx.stream:

            def parse(d: Deployment, content: bytes) -> tuple[bytes, Usage | None]:
                return endpoint.exchange(d).response(d, ctx, content)

            served = await complete(
                self.gw, group, sizing, build, parse, first=dep, info=ctx, lease=ctx.lease
            )
            ctx.upstream_s = time.perf_counter() - t0
        else:

            def translator(d: Deployment) -> StreamTranslator:
                return endpoint.exchange(d).translator(d, ctx)

            served = await stream(
                self.gw, group, sizing, build, translator, first=dep, info=ctx, lease=ctx.lease
            )
            ctx.ttft_s = served.ttft
        ctx.served = served
        ctx.dep = served.dep
        ctx.provider = served.dep.provider
        ctx.attempts = served.attempts
        return None
