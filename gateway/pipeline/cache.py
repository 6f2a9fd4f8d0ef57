"""Stage ``cache``: the response cache. Exact match, per tenant, single-flight.

How the pipeline (``run.py``) uses it, for endpoints that declare a ``cache_kind``
(chat, embeddings, messages)::

    ctx.cache = await cache.lookup(ctx)      # after auth: the tenant is known
    HIT   -> ctx.cache.reply(ctx)            # the JSON, or a replayed SSE stream
    MISS  -> ctx.cache.store(out, provider, usage)     # a complete 200 answer
             ctx.cache.watch(relay, provider)           # a stream: stored once complete
    any   -> ctx.cache.abandon()             # no answer (error, client gone): release waiters

**Key.** ``_speedups.cachekey.cache_key(tenant, kind, body)`` over the decoded
body, the tenant being ``ctx.principal.tenant`` (set by stage ``auth``); it
ignores ``stream``, ``stream_options`` and ``user``, so a streamed and a plain
request share an entry. Redis keys are ``gw:{tenant}:cache:<digest>``
(and ``gw:{tenant}:lock:<digest>``); the tenant is also hashed into the digest.

**What is stored.** The answer as one non-streamed JSON body (for chat, a
``chat.completion``), behind a one-line header with the provider that produced
it and its token usage. A streamed answer whose relay completed with no error is
stored as the client got it and assembled into that JSON by the first hit that
reads it, which writes the JSON back in its place with the entry's TTL (a miss,
what a gateway mostly serves, pays no assembly; ``cache_replay.KeptFrames``,
``assembled``, ``cache_compact.lua``); one that does not assemble is no hit. A
client that streams gets the JSON replayed as a valid SSE stream of its endpoint
(``Endpoint.replay``; the assembly is ``Endpoint.assembler``). The assemblies and
replays live in ``cache_replay.py``; this module keys, stores, coalesces and serves.

**When.** Only aliases with ``models[].cache.ttl`` cache; ``x-gateway-cache-ttl:
<1..86400>`` overrides the TTL per request (anything else is a 400 naming the
header). ``Cache-Control: no-cache`` skips the lookup and ``no-store`` the
store. The response says ``x-gateway-cache: HIT`` (served from the cache or from
an identical concurrent request), ``MISS`` (the provider answered; the cache was
read or will be written) or ``BYPASS`` (caching off for the alias, both
directives, or the store failing).

**Single-flight.** Identical requests in one process share one upstream call: the
first becomes the leader of an in-flight entry, the others await it (streaming
followers included: they wait for the whole answer, then get a replay). If the
leader fails (error status, cut stream, client gone), its followers go upstream
themselves at once, each on its own: an error is not shared, and there is no
second round of waiting. Across replicas (Redis) the leader's lookup also takes
a short lock ``gw:{tenant}:lock:<digest>`` in the same script call; a replica
that finds the lock taken looks again with backoff (5 ms doubling to 100 ms)
until the entry appears, or the lock is free (the leader failed: it takes the
lock and goes upstream), or ``GATEWAY_CACHE_LOCK_MS`` passes: then it goes
upstream itself. Nobody waits longer than that bound.

**Failure.** Every Redis call is bounded by ``limits.redis_timeout_ms`` (50 ms);
on any error the request goes on without the cache (``BYPASS``), the error is
counted, and for half a second the cache does not try Redis at all.

**Metrics.** ``llm_cache_requests_total{model,result}`` (hit, miss, bypass,
error), ``llm_cache_errors_total{op}``, ``llm_cache_coalesced_total{model,scope}``
and ``llm_cache_tokens_saved_total{model,kind}``. A hit is not a provider
request: ``llm_provider_*`` and ``llm_tokens_total`` count upstream traffic
only; the tokens a hit would have cost go to ``llm_cache_tokens_saved_total``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from _speedups.cachekey import cache_key
from gateway.pipeline.cache_entry import MAX_TTL_S, Entry, directives, tag, usage_ints
from gateway.pipeline.cache_replay import KeptFrames, assembles, stream_entry
from gateway.pipeline.reply import Reply
from gateway.store.cache import CacheStore, CacheUnavailable, MemoryCacheStore
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.endpoint import Assembler, Endpoint
    from gateway.pipeline.ratelimit import Limit
    from gateway.pipeline.relay import StreamRelay
    from gateway.pipeline.route import Route
    from gateway.settings import Settings
    from gateway.store.base import StateBackend
    from gateway.wire.chat import Usage

__all__ = [
    "ANONYMOUS",
    "MAX_TTL_S",
    "Entry",
    "Lookup",
    "ResponseCache",
]

ANONYMOUS = "anonymous"
_WATCH_S = 0.25  # how often a follower checks that its leader is still there

HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"


# -- the per-request handle -------------------------------------------------------------


class _Flight:
    """One upstream call that identical requests in this process wait for.

    It keeps the leader's task: a follower that sees the task finished while the
    flight is still open knows the leader was lost (cancelled, say) without saying
    so, and releases the flight instead of waiting for the full bound.
    """

    __slots__ = ("future", "leader", "task")

    def __init__(self, leader: Lookup) -> None:
        self.future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self.leader = weakref.ref(leader)
        self.task = asyncio.current_task()

    def resolve(self, entry: Entry | None) -> None:
        if not self.future.done():
            self.future.set_result(entry)


class Lookup:
    """What stage 3 decided for one request, and what the later stages report back."""

    __slots__ = (
        "__weakref__",
        "_cache",
        "_done",
        "_flight",
        "_lookup_s",
        "_make",
        "entry",
        "held",
        "key",
        "label",
        "lock",
        "status",
        "storing",
        "token",
        "ttl_ms",
    )

    def __init__(
        self,
        cache: ResponseCache | None,
        status: str,
        *,
        label: str = "",
        key: str = "",
        lock: str = "",
        ttl_ms: int = 0,
        storing: bool = False,
    ) -> None:
        self._cache = cache
        self.status = status
        self.label = label
        self.key = key
        self.lock = lock
        self.ttl_ms = ttl_ms
        self.storing = storing
        self.token = ""
        self.held = False  # this request holds the Redis fill lock
        self.entry: Entry | None = None
        self._flight: _Flight | None = None
        self._done = cache is None
        self._lookup_s = 0.0
        self._make: Callable[[], Assembler] | None = None  # the endpoint's assembler

    # -- HIT ------------------------------------------------------------------------

    def reply(self, ctx: RequestContext) -> Reply:
        """The cached answer, as JSON or as the endpoint's replayed SSE stream."""
        entry = self.entry
        endpoint = ctx.endpoint
        assert entry is not None and endpoint is not None
        ctx.provider = entry.provider
        total = time.perf_counter() - ctx.start
        timing = f"gateway;dur={total * 1000:.3f}, cache;dur={self._lookup_s * 1000:.3f}"
        headers = ctx.headers
        headers["x-gateway-provider"] = entry.provider
        headers["server-timing"] = timing
        headers["x-gateway-cache"] = HIT
        if ctx.stream:
            frames = _once(endpoint.replay(entry.body, ctx))  # one frame: the last
            return Reply(200, headers, frames=frames, last=_always)
        return Reply(200, headers, entry.body)

    # -- MISS / BYPASS ----------------------------------------------------------------

    def timing(self) -> str:
        """The lookup's part of ``server-timing`` (empty when the cache was not asked)."""
        if self.status == BYPASS:
            return ""
        return f", cache;dur={self._lookup_s * 1000:.3f}"

    def store(self, body: bytes, provider: str, usage: Usage | None = None) -> None:
        """A complete 200 answer: share it with waiting requests and store it."""
        if self._done or self._cache is None:
            return
        prompt, completion = usage_ints(usage)
        self._cache._finish(self, Entry(provider, body, prompt, completion))

    def watch(self, relay: StreamRelay, provider: str, endpoint: Endpoint) -> None:
        """Keep the relayed stream as it goes; store it if it ends whole and clean."""
        if self._done or self._cache is None or not (self.storing or self._flight):
            return
        frames = KeptFrames(endpoint.assembler)
        relay.observe(frames.feed)

        def closed(r: StreamRelay) -> None:
            cache = self._cache
            if r.completed and r.error is None and cache is not None and not self._done:
                usage = r.usage
                assembler = frames.assembler
                if assembler is None:
                    kept = b"".join(frames.kept)
                    if len(kept) <= cache.max_entry_bytes:  # stored as relayed
                        cache._finish(self, stream_entry(provider, kept, usage))
                        return
                    assembler = endpoint.assembler()  # the answer may still fit assembled
                    assembler.feed(kept)
                body = assembler.result(usage)
                if body is not None:
                    self.store(body, provider, usage)
                    return
            self.abandon()

        relay.add_close_hook(closed)

    def abandon(self) -> None:
        """No answer to store (error, cut stream, client gone): release waiters and lock."""
        if not self._done and self._cache is not None:
            self._cache._abandon(self)

    def __del__(self) -> None:
        # Last resort: a leader dropped without store() or abandon() must not keep
        # its followers waiting for the full bound.
        if not self._done and self._flight is not None and self._cache is not None:
            try:
                self._cache._abandon(self)
            except Exception:  # pragma: no cover - interpreter shutdown, no loop
                pass


_BYPASS = Lookup(None, BYPASS)

# -- the cache --------------------------------------------------------------------------


class _Counters:
    """Metric children cached per label set (``.labels()`` is not free on the hot path)."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], Any] = {}
        self._saved: dict[str, tuple[Any, Any]] = {}

    def request(self, label: str, result: str) -> None:
        child = self._requests.get((label, result))
        if child is None:
            child = self._requests[(label, result)] = metrics.llm_cache_requests_total.labels(
                label, result
            )
        child.inc()

    def saved(self, label: str, entry: Entry) -> None:
        pair = self._saved.get(label)
        if pair is None:
            saved = metrics.llm_cache_tokens_saved_total
            pair = self._saved[label] = (
                saved.labels(label, "prompt"),
                saved.labels(label, "completion"),
            )
        pair[0].inc(entry.prompt_tokens)
        pair[1].inc(entry.completion_tokens)


class ResponseCache:
    """Stage 3 for the whole process: TTLs per alias, the store, the in-flight table."""

    def __init__(self, settings: Settings) -> None:
        self.ttl_s: dict[str, int] = {
            m.alias: m.cache.ttl for m in settings.config.models if m.cache is not None
        }
        # The same bound as every other hot-path Redis call (the rate limiter's).
        self.timeout_s = settings.config.limits.redis_timeout_ms / 1000
        # GATEWAY_CACHE_* tuning, read and validated by Settings.from_env at start-up.
        self.lock_ms = settings.cache_lock_ms
        self.max_entry_bytes = settings.cache_max_entry_bytes
        self.store: CacheStore = MemoryCacheStore(
            max_entries=settings.cache_max_entries, max_bytes=settings.cache_max_bytes
        )
        self._flights: dict[str, _Flight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: set[asyncio.Future[Any]] = set()  # stores queued by ``store_soon``
        # The store's ``store_soon`` (Redis with the auto-pipeline), looked up once per store.
        self._store_soon: Callable[..., asyncio.Future[Any] | None] | None = None
        self._count = _Counters()
        # Declare the series at start-up so dashboards see zeros, not "no data".
        for alias in self.ttl_s:
            for result in ("hit", "miss", "bypass", "error"):
                metrics.llm_cache_requests_total.labels(alias, result)
        if self.ttl_s:
            for op in ("lookup", "store", "unlock"):
                metrics.llm_cache_errors_total.labels(op)

    @property
    def enabled(self) -> bool:
        return bool(self.ttl_s)

    async def start(self, backend: StateBackend) -> None:
        """Use the state backend's store when it has one (lifespan, after it started)."""
        store = backend.cache_store(self.timeout_s)
        if store is not None:
            self.store = store
            self._store_soon = getattr(store, "store_soon", None)

    async def aclose(self) -> None:
        """Let pending stores finish (briefly) before the Redis client closes."""
        if self._tasks or self._pending:
            await asyncio.wait([*self._tasks, *self._pending], timeout=1.0)

    # -- stage 3 ----------------------------------------------------------------------

    async def lookup(
        self, ctx: RequestContext, then: Callable[[Lookup, str], None] | None = None
    ) -> Lookup:
        """Decide HIT / MISS / BYPASS; a MISS may make this request the fill's leader.
        ``then(lookup, token)``: called when the Redis lookup is queued on the
        auto-pipeline, before it goes out (``token``: the lock token it sends, "" when it
        takes no lock), so a call queued then shares its write and runs right after it."""
        endpoint, group, principal = ctx.endpoint, ctx.group, ctx.principal
        assert endpoint is not None and group is not None and ctx.scope is not None
        kind = endpoint.cache_kind
        if kind is None:
            return _BYPASS
        ttl, no_cache, no_store = directives(ctx.scope["headers"])  # a bad TTL: 400 always
        alias_ttl = self.ttl_s.get(group.name)
        if alias_ttl is None or (no_cache and no_store):
            if alias_ttl is not None:
                self._count.request(group.label, "bypass")
            return _BYPASS
        t0 = time.perf_counter()
        tenant = principal.tenant if principal is not None else ANONYMOUS
        try:
            digest = cache_key(tenant, kind, ctx.body)
        except (TypeError, ValueError):
            self._count.request(group.label, "bypass")
            return _BYPASS
        hash_tag = tag(tenant)
        lk = Lookup(
            self,
            MISS,
            label=group.label,
            key=f"gw:{{{hash_tag}}}:cache:{digest}",
            lock=f"gw:{{{hash_tag}}}:lock:{digest}",
            ttl_ms=(ttl or alias_ttl) * 1000,
            storing=not no_store,
        )
        lk._make = endpoint.assembler
        try:
            if not no_cache:
                await self._read(lk, then)
        finally:
            lk._lookup_s = time.perf_counter() - t0
        self._count.request(group.label, "error" if lk.status == BYPASS else lk.status.lower())
        if lk.entry is not None:
            self._count.saved(group.label, lk.entry)
        return lk

    async def _read(self, lk: Lookup, then: Callable[[Lookup, str], None] | None) -> None:
        flight = self._flights.get(lk.key)
        if flight is not None:  # an identical request is on its way upstream: wait for it
            entry = await self._follow(flight)
            if entry is not None:
                self._hit(lk, entry, "process")
            return  # the leader failed: go upstream ourselves (MISS, no lock)
        # Register before the first await so that concurrent twins in this process follow.
        lk._flight = flight = _Flight(lk)
        self._flights[lk.key] = flight
        lk.token = os.urandom(12).hex()
        lock_ms = self.lock_ms if lk.storing else 0
        try:
            if then is None:
                raw, held = await self.store.lookup(lk.key, lk.lock, lk.token, lock_ms)
            else:
                token = lk.token if lock_ms else ""
                raw, held = await self.store.lookup(
                    lk.key, lk.lock, lk.token, lock_ms, lambda: then(lk, token)
                )
            if raw is None and not held and lock_ms:
                raw, held = await self._await_fill(lk, lock_ms)
                if raw is not None:
                    metrics.llm_cache_coalesced_total.labels(lk.label, "replicas").inc()
        except CacheUnavailable:
            metrics.llm_cache_errors_total.labels("lookup").inc()
            lk.status = BYPASS
            lk.storing = False
            self._abandon(lk)
            return
        except BaseException:
            self._abandon(lk)
            raise
        lk.held = held
        entry = Entry.decode(raw) if raw is not None else None
        if entry is None:
            return
        stream = entry.frames
        if self._hit(lk, entry, None):
            if stream and raw is not None:  # assembled: the hits to come read the answer
                self._spawn(self._compact(lk.key, raw, entry.encode()))
            lk._done = True
            self._release(lk, entry)

    def _hit(self, lk: Lookup, entry: Entry, coalesced: str | None) -> bool:
        """A hit, unless the entry is a stream whose frames do not assemble (a miss)."""
        if entry.frames and (lk._make is None or not assembles(entry, lk._make)):
            return False
        lk.entry = entry
        lk.status = HIT
        if coalesced is not None:
            metrics.llm_cache_coalesced_total.labels(lk.label, coalesced).inc()
        return True

    async def _follow(self, flight: _Flight) -> Entry | None:
        deadline = time.perf_counter() + self.lock_ms / 1000
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            try:
                async with asyncio.timeout(min(_WATCH_S, remaining)):
                    return await asyncio.shield(flight.future)
            except TimeoutError:
                task = flight.task
                if task is not None and task.done() and not flight.future.done():
                    leader = flight.leader()
                    if leader is not None:
                        leader.abandon()
                    flight.resolve(None)

    async def _await_fill(self, lk: Lookup, lock_ms: int) -> tuple[bytes | None, bool]:
        """Another replica holds the fill lock: look again until it stored, failed or time's up."""
        deadline = time.perf_counter() + lock_ms / 1000
        delay = 0.005
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None, False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
            raw, held = await self.store.lookup(lk.key, lk.lock, lk.token, lock_ms)
            if raw is not None or held:
                return raw, held

    # -- the fill's end ---------------------------------------------------------------

    def _release(self, lk: Lookup, entry: Entry | None) -> None:
        flight = lk._flight
        if flight is not None:
            flight.resolve(entry)
            if self._flights.get(lk.key) is flight:
                del self._flights[lk.key]
            lk._flight = None

    def _finish(self, lk: Lookup, entry: Entry) -> None:
        lk._done = True
        flight = lk._flight
        if flight is not None:
            flight.resolve(entry)  # followers go on now; the entry stays in flight until stored
        if not lk.storing or len(entry.body) > self.max_entry_bytes:
            self._release(lk, entry)
            if lk.held:
                self._spawn(self._unlock(lk))
            return
        soon = self._store_soon
        if soon is not None:
            fut = soon(lk.key, entry.encode(), lk.ttl_ms, lk.lock, lk.token)
            if fut is not None:
                self._pending.add(fut)
                fut.add_done_callback(functools.partial(self._stored, lk, entry))
                return
        self._spawn(self._write(lk, entry))

    def _stored(self, lk: Lookup, entry: Entry, fut: asyncio.Future[Any]) -> None:
        """The reply to a store queued by ``store_soon``."""
        self._pending.discard(fut)
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if isinstance(exc, NoScriptError):  # a restarted Redis: the slow way loads it
            self._spawn(self._write(lk, entry))
            return
        if exc is not None:  # the store started its cool-down
            metrics.llm_cache_errors_total.labels("store").inc()
        self._release(lk, entry)

    async def _write(self, lk: Lookup, entry: Entry) -> None:
        try:
            await self.store.store(lk.key, entry.encode(), lk.ttl_ms, lk.lock, lk.token)
        except CacheUnavailable:
            metrics.llm_cache_errors_total.labels("store").inc()
        finally:
            self._release(lk, entry)

    def _abandon(self, lk: Lookup) -> None:
        lk._done = True
        self._release(lk, None)
        if lk.held:
            lk.held = False
            self._spawn(self._unlock(lk))

    async def _compact(self, key: str, read: bytes, value: bytes) -> None:
        try:
            await self.store.compact(key, read, value)
        except CacheUnavailable:
            metrics.llm_cache_errors_total.labels("store").inc()

    async def _unlock(self, lk: Lookup) -> None:
        try:
            await self.store.unlock(lk.lock, lk.token)
        except CacheUnavailable:
            metrics.llm_cache_errors_total.labels("unlock").inc()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _always() -> bool:
    return True


class CacheStage:
    """Stage ``cache``: a HIT answers here; MISS and BYPASS go on (``respond`` says which).

    With ``early`` (the route and limit stages, when nothing runs between this stage and
    theirs: no plugin, see ``app.build_pipeline``), a request whose lookup goes to Redis
    is routed first and its reservation is queued right behind the lookup, in the same
    write: one round trip for both, and Redis reserves only if the lookup sends the
    request upstream (``Limiter.reserve_on_miss``). A hit takes nothing, exactly as
    when the reservation came after it; stage ``limit`` collects the answer.
    """

    name = "cache"

    def __init__(self, cache: ResponseCache, early: tuple[Route, Limit] | None = None) -> None:
        self.lookup = cache.lookup
        self.enabled = cache.enabled
        self.early = early

    def applies(self, endpoint: Endpoint) -> bool:
        """No alias caches: nothing to look up (stage ``respond`` says BYPASS)."""
        return self.enabled and endpoint.cache_kind is not None

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        endpoint = ctx.endpoint
        if endpoint is None or endpoint.cache_kind is None:
            return None
        if not endpoint.cacheable(ctx):
            ctx.cache = _BYPASS
            return None
        early = self.early
        if early is None or not early[1].applies(endpoint) or not early[0].early(ctx):
            found = ctx.cache = await self.lookup(ctx)
            return found.reply(ctx) if found.entry is not None else None
        limiter = early[1].limiter

        def then(lk: Lookup, token: str) -> None:
            try:
                ctx.reserving = limiter.reserve_on_miss(ctx, (lk.key, lk.lock, token))
            except Exception:  # stage limit meets it again, where it belongs
                ctx.reserving = None

        try:
            found = ctx.cache = await self.lookup(ctx, then)
        except BaseException:
            _drop_reservation(ctx)
            raise
        if found.entry is None:
            return None
        _drop_reservation(ctx)
        return found.reply(ctx)


def _drop_reservation(ctx: RequestContext) -> None:
    """A reservation sent with the lookup that stage ``limit`` will not collect."""
    pending = ctx.reserving
    if pending is not None:
        ctx.reserving = None
        pending.undo()
