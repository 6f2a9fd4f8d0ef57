"""Redis (standalone or Cluster) as the shared state backend.

URLs: ``redis://``, ``rediss://`` and ``unix://`` for one server; a cluster is
``redis+cluster://host:port`` (``rediss+cluster://`` with TLS) or any of the
former with ``?cluster=true``. One seed node is enough: the client discovers
the others.

Every hot-path call is one ``EVALSHA`` (``scripts.py``) bounded by ``timeout``
(default 50 ms) with no client-side retries. On one server the calls of a loop
turn go out together on one connection (``autopipe.py``); on a cluster, through
redis-py's cluster client and its pool of ``POOL_SIZE`` connections per node. A
timeout or a connection error raises ``StateUnavailable``: that request is
decided by the caller's policy (the local fallback). One slow call does not
make an outage, though: on a healthy Redis under CPU contention a call now and
then passes 50 ms, and a stalled event loop times out every call in flight at
once. So the backend is marked down only after ``down_after`` (3) failed calls
in a row that span at least ``down_window`` (0.25 s) with no success between
them. From then on calls fail at once (reason ``down``) instead of each waiting
for the timeout, and a background probe sends ``PING`` after 0.1 s, then
doubling up to every ``probe_interval`` (1 s) seconds; the first answer marks
it healthy again, so the gateway returns to Redis by itself about a second
after an outage ends. ``gateway_state_mode_changes_total{to}`` counts the
switches (``fallback``, ``shared``). A script's error reply (a bug,
``CROSSSLOT`` on a misconfigured cluster) raises ``StateUnavailable("error")``
too, logged once a minute, but is no outage: the caller's policy applies to
that request, never a 500, and Redis stays "up".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from gateway.store import scripts
from gateway.store.autopipe import AutoPipeline
from gateway.store.base import Bucket, Budget, Reservation, SpendTake, StateUnavailable, Take
from gateway.store.cache import RedisCacheStore
from gateway.store.responses import RedisResponseStore
from gateway.store.tenants import RedisTenantStore
from gateway.telemetry import metrics

log = logging.getLogger("gateway.store")

_OUTAGE = (RedisError, OSError, TimeoutError)
POOL_SIZE = 512  # connections per process (per node on a cluster)
REFUNDS_PER_CALL = 64  # buckets per coalesced refund call (keys of one script call)
MAX_AMOUNT = 2**53 - 1  # the scripts' integer ceiling (a larger refund: a full bucket)


def parse_url(url: str) -> tuple[str, bool]:
    """``(url for redis-py, is_cluster)``: strips the ``+cluster`` scheme and the
    ``cluster=true`` query parameter."""
    parts = urlsplit(url)
    scheme = parts.scheme
    cluster = False
    if scheme.endswith("+cluster"):
        scheme = scheme[: -len("+cluster")]
        cluster = True
    query = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "cluster":
            cluster = cluster or v.lower() in ("1", "true", "yes")
        else:
            query.append((k, v))
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment)), cluster


def is_redis_url(url: str) -> bool:
    scheme = urlsplit(url).scheme
    return scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


class RedisBackend:
    kind = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        probe_interval: float = 1.0,
        connect_timeout: float = 0.5,
        down_after: int = 3,
        down_window: float = 0.25,
    ) -> None:
        self._url, self.cluster = parse_url(url)
        if self.cluster:
            self.kind = "redis-cluster"
        self.timeout = timeout
        self.probe_interval = probe_interval
        self._connect_timeout = connect_timeout
        self.client: Redis | RedisCluster | None = None
        self.pipe: AutoPipeline | None = None  # standalone Redis: calls batched per loop turn
        self._scripts: dict[str, Any] = {}
        self._healthy = True
        self._probe: asyncio.Task[None] | None = None
        self.down_since: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Refunds of this loop turn, summed per bucket: one settle call per turn.
        self._refunds: dict[Bucket, int] = {}
        self.down_after = down_after
        self.down_window = down_window
        self._failures = 0  # failed calls in a row (a success resets it)
        self._first_failure = 0.0  # monotonic time of the first of them
        self._logged_error = float("-inf")
        self._tenants = RedisTenantStore(self, self._url, self.cluster)
        metrics.gateway_state_backend_up.set(1)

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self) -> None:
        kwargs: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self._connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "max_connections": POOL_SIZE,
        }
        if self.cluster:
            self.client = RedisCluster.from_url(self._url, **kwargs)
        else:
            # Blocking: a burst beyond the pool waits (within the call's timeout) for a
            # connection instead of failing at once with "too many connections".
            pool = BlockingConnectionPool.from_url(self._url, timeout=self.timeout, **kwargs)
            self.client = Redis(connection_pool=pool)
            self.pipe = AutoPipeline(self.client)
        # The cache's scripts too (its store registers its own handles to the same
        # SHAs): a fresh Redis then costs the first lookup and store no NOSCRIPT.
        self._scripts = scripts.register(
            self.client,
            scripts.RATELIMIT_SCRIPTS
            + scripts.TENANT_SCRIPTS
            + scripts.ON_MISS_SCRIPTS
            + scripts.CACHE_SCRIPTS,
        )
        try:  # a cluster client learns its nodes here; load the scripts while at it
            async with asyncio.timeout(max(2.0, self._connect_timeout)):
                if isinstance(self.client, RedisCluster):
                    await self.client.initialize()
                await scripts.preload(self.client, self._scripts)
        except _OUTAGE as exc:
            # Start anyway: limits fail over (open or closed, by config) until it answers.
            log.warning(
                "state backend not answering at start-up",
                extra={"fields": {"backend": self.kind, "error": type(exc).__name__}},
            )
            self._mark_down("error")

    async def ping(self) -> bool:
        if self.client is None:
            return False
        try:
            async with asyncio.timeout(1.0):
                return bool(await self.client.ping())
        except _OUTAGE:
            return False

    async def aclose(self) -> None:
        await self._tenants.aclose()
        self._send_refunds()
        if self._tasks:  # settles in flight: briefly, before the client closes
            await asyncio.wait(list(self._tasks), timeout=1.0)
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self.pipe is not None:
            await self.pipe.aclose()
        if self.client is not None:
            with contextlib.suppress(*_OUTAGE):
                await self.client.aclose()

    # -- the two operations -------------------------------------------------------------

    async def reserve(
        self,
        buckets: Sequence[Bucket],
        amounts: Sequence[int],
        *,
        spend: Sequence[tuple[Budget, int]] = (),
        now_us: int | None = None,
    ) -> Reservation:
        keys, args = _reserve_args(buckets, amounts, spend, now_us)
        return _reservation(await self.run("ratelimit_reserve", keys, args), len(buckets))

    def reserve_on_miss(
        self,
        cache: tuple[str, str, str],
        buckets: Sequence[Bucket],
        amounts: Sequence[int],
    ) -> OnMiss | None:
        """``reserve``, queued now on the auto-pipeline behind the response cache's lookup
        that was just queued there, to go out in the same write; Redis makes it only if
        that lookup sends the request upstream (``ratelimit_reserve_on_miss.lua``); no
        budget holds (their requests reserve as usual).
        ``cache``: the lookup's entry key, lock key and lock token ("": it took no lock).
        None: nothing sent (no auto-pipeline, as on a cluster, or Redis marked down): the
        caller reserves as usual. ``reservation_on_miss`` awaits the answer; ``undo``
        gives back what a handle that will not be awaited took."""
        pipe = self.pipe
        if pipe is None or not self._healthy:
            return None
        keys, args = _reserve_args(buckets, amounts, (), None)
        keys += cache[:2]
        args.append(cache[2])
        script = self._scripts["ratelimit_reserve_on_miss"]
        return OnMiss(pipe.evalsha(script.sha, keys, args, self.timeout), keys, args, len(buckets))

    async def reservation_on_miss(self, sent: OnMiss) -> Reservation | None:
        """The answer to ``reserve_on_miss``: None when Redis skipped it (the entry was
        there, or another request holds the fill lock); an outage raises
        ``StateUnavailable`` as ``reserve`` does."""
        script = self._scripts["ratelimit_reserve_on_miss"]

        async def sent_already(client: Redis | RedisCluster) -> Any:
            try:  # shielded: a cancelled request's reservation still gets its answer (undo)
                return await asyncio.shield(sent.reply)
            except NoScriptError:  # see run(): EVAL runs it (still behind the lookup)
                async with asyncio.timeout(self.timeout):
                    return await client.eval(script.script, len(sent.keys), *sent.keys, *sent.args)

        reply = await self.call(sent_already, "ratelimit_reserve_on_miss", bounded=True, sent=True)
        if reply == b"skip" or reply == "skip":
            return None
        return _reservation(reply, sent.buckets)

    def undo(self, sent: OnMiss, buckets: Sequence[Bucket], amounts: Sequence[int]) -> None:
        """Nobody will await ``sent`` (its request was answered from the cache, or ended):
        when its answer comes, give back whatever it took, requests included."""

        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return  # not run (NOSCRIPT), or its fate unknown: a lost refund never over-admits
            reply = fut.result()
            if reply in (b"skip", "skip") or not _reservation(reply, sent.buckets).allowed:
                return
            taken = [(b, n) for b, n in zip(buckets, amounts, strict=True) if n > 0]
            if taken:
                self.settle_later([b for b, _ in taken], [n for _, n in taken], [0] * len(taken))

        sent.reply.add_done_callback(done)

    async def settle(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        *,
        spend: Sequence[tuple[Budget, int, int]] = (),
        now_us: int | None = None,
        lazy: bool = False,
    ) -> list[int]:
        """``lazy``: a refund nobody waits for; on the auto-pipeline it goes out with the
        next call that is waited for (late, a refund only refuses a little longer)."""
        args: list[int | str] = ["" if now_us is None else now_us]
        for b, res, act in zip(buckets, reserved, actual, strict=True):
            args += (b.capacity, b.period_us, res, act)
        keys = [b.key for b in buckets]
        if spend:
            for budget, held, cost in spend:
                keys.append(budget.key)
                args += (budget.limit, held, cost, budget.expire_at)
            args.append(len(spend))
        reply = _ints(await self.run("ratelimit_settle", keys, args, lazy=lazy))
        return [reply[i] for i in range(0, 3 * len(buckets), 3)]

    def settle_later(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        spend: Sequence[tuple[Budget, int, int]] = (),
    ) -> None:
        """Settle off the caller's path. On one server, pure refunds (actual < reserved,
        no budget) are summed per bucket over the loop turn and sent as one call at its
        end: refunds commute (each moves the bucket's TAT back, floored at now), so the
        sum is exactly the refunds one after another, sent no later than a call of each
        would be. Charges and budget corrections keep a call of their own."""
        if (
            self.pipe is not None
            and not spend
            and all(a < r for r, a in zip(reserved, actual, strict=True))
        ):
            refunds = self._refunds
            if not refunds:
                asyncio.get_running_loop().call_soon(self._send_refunds)
            for b, r, a in zip(buckets, reserved, actual, strict=True):
                refunds[b] = refunds.get(b, 0) + r - a
            return
        self._spawn(self._settle_quietly(buckets, reserved, actual, spend))

    def _send_refunds(self) -> None:
        refunds, self._refunds = self._refunds, {}
        items = list(refunds.items())
        for i in range(0, len(items), REFUNDS_PER_CALL):
            part = items[i : i + REFUNDS_PER_CALL]
            amounts = [min(n, MAX_AMOUNT) for _, n in part]
            part_buckets = [b for b, _ in part]
            zeros = [0] * len(part)
            self._spawn(self._settle_quietly(part_buckets, amounts, zeros, (), lazy=True))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle_quietly(
        self,
        buckets: Sequence[Bucket],
        reserved: Sequence[int],
        actual: Sequence[int],
        spend: Sequence[tuple[Budget, int, int]],
        lazy: bool = False,
    ) -> None:
        with contextlib.suppress(StateUnavailable):  # a lost settle never over-admits
            await self.settle(buckets, reserved, actual, spend=spend, lazy=lazy)

    def cache_store(self, timeout_s: float) -> RedisCacheStore | None:
        if self.client is None:
            return None
        return RedisCacheStore(self.client, pipe=self.pipe, timeout_s=timeout_s)

    def response_store(self, timeout_s: float) -> RedisResponseStore:
        assert self.client is not None, "response_store() is for after start()"
        return RedisResponseStore(self.client, timeout_s=timeout_s)

    def tenants(self) -> RedisTenantStore:
        return self._tenants

    async def run(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        limit_s: float | None = None,
        *,
        lazy: bool = False,
    ) -> Any:
        """Call script ``name`` within the timeout; an outage raises ``StateUnavailable``.
        ``lazy``: see ``AutoPipeline.evalsha``."""
        script = self._scripts[name]
        pipe = self.pipe
        if pipe is not None:  # the pipe times its calls out itself: one timer per batch
            limit = limit_s or self.timeout

            async def piped(client: Redis | RedisCluster) -> Any:
                try:
                    return await pipe.evalsha(script.sha, keys, args, limit, lazy=lazy)
                except NoScriptError:  # see below
                    async with asyncio.timeout(limit):
                        return await client.eval(script.script, len(keys), *keys, *args)

            return await self.call(piped, name, limit_s, bounded=True)

        async def go(client: Redis | RedisCluster) -> Any:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                # After SCRIPT FLUSH or a restart: EVAL runs the source and caches it
                # again, one round trip where SCRIPT LOAD + EVALSHA would take two.
                return await client.eval(script.script, len(keys), *keys, *args)

        return await self.call(go, name, limit_s)

    async def call(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        name: str,
        limit_s: float | None = None,
        *,
        bounded: bool = False,
        sent: bool = False,
    ) -> Any:
        """``fn(client)`` within the timeout (default: the hot-path one; ``bounded``: ``fn``
        keeps to it itself); an outage raises ``StateUnavailable``, and so does an error
        reply (logged, not an outage). ``sent``: the call went out already; its answer
        is awaited even if the backend was marked down since."""
        if not self._healthy and not sent:
            raise StateUnavailable("down")
        client = self.client
        assert client is not None
        try:
            if bounded:
                reply = await fn(client)
            else:
                async with asyncio.timeout(limit_s or self.timeout):
                    reply = await fn(client)
            self._failures = 0
            return reply
        except (ResponseError, RedisClusterException) as exc:
            if _is_outage(exc):
                self._failed("error")
                raise StateUnavailable("error") from None
            # A script that errors (a bug, CROSSSLOT from a misconfigured cluster) is
            # not an outage: Redis stays "up", but the request must not become a 500.
            now = time.monotonic()
            if now - self._logged_error > 60:
                self._logged_error = now
                log.error(
                    "state backend call failed",
                    extra={"fields": {"call": name, "error": str(exc)[:200]}},
                )
            raise StateUnavailable("error") from None
        except TimeoutError:
            self._failed("timeout")
            raise StateUnavailable("timeout") from None
        except _OUTAGE:
            self._failed("error")
            raise StateUnavailable("error") from None

    # -- health -------------------------------------------------------------------------

    def _failed(self, reason: str) -> None:
        """One failed call: an outage once ``down_after`` in a row span ``down_window``."""
        now = time.monotonic()
        if self._failures == 0:
            self._first_failure = now
        self._failures += 1
        if self._failures >= self.down_after and now - self._first_failure >= self.down_window:
            self._mark_down(reason)

    def _mark_down(self, reason: str) -> None:
        if not self._healthy:
            return
        self._healthy = False
        self.down_since = time.monotonic()
        metrics.gateway_state_backend_up.set(0)
        metrics.gateway_state_mode_changes_total.labels("fallback").inc()
        log.warning(
            "state backend unavailable; using the fallback policy",
            extra={"fields": {"backend": self.kind, "reason": reason}},
        )
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        # Soon after a blip (0.1 s, doubling), then every probe_interval while it lasts.
        delay = min(0.1, self.probe_interval)
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.probe_interval)
            if await self._answers():
                await self._drop_stale_connections()
                down_s = time.monotonic() - (self.down_since or time.monotonic())
                self._healthy = True
                self.down_since = None
                self._failures = 0
                metrics.gateway_state_backend_up.set(1)
                metrics.gateway_state_mode_changes_total.labels("shared").inc()
                log.warning(
                    "state backend is back",
                    extra={"fields": {"backend": self.kind, "down_s": round(down_s, 3)}},
                )
                return

    async def _drop_stale_connections(self) -> None:
        """Pooled connections from before the outage may be dead (a restarted server):
        close them, so requests after the recovery open fresh ones instead of each
        failing once on a stale socket and flapping the backend down again."""
        client = self.client
        with contextlib.suppress(*_OUTAGE):
            if isinstance(client, RedisCluster):
                for node in client.get_nodes():
                    await node.disconnect_free_connections()
            elif client is not None:
                await client.connection_pool.disconnect(inuse_connections=False)

    async def _answers(self) -> bool:
        client = self.client
        if client is None:
            return False
        try:
            async with asyncio.timeout(max(self.timeout * 4, 0.2)):
                if isinstance(client, RedisCluster):
                    # Every primary must answer: a request may hash to any of them.
                    await client.ping(target_nodes=RedisCluster.PRIMARIES)
                else:
                    await client.ping()
            return True
        except _OUTAGE:
            return False


class OnMiss(NamedTuple):
    """A reservation sent with a cache lookup (``RedisBackend.reserve_on_miss``)."""

    reply: asyncio.Future[Any]
    keys: list[str]
    args: list[Any]
    buckets: int  # how many buckets it names (the rest of its keys: budgets, cache)


def _reserve_args(
    buckets: Sequence[Bucket],
    amounts: Sequence[int],
    spend: Sequence[tuple[Budget, int]],
    now_us: int | None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``ratelimit_reserve.lua``."""
    args: list[Any] = ["" if now_us is None else now_us]
    for b, n in zip(buckets, amounts, strict=True):
        args += (b.capacity, b.period_us, n)
    keys = [b.key for b in buckets]
    if spend:  # budget counters after the buckets, then their count
        for budget, n in spend:
            keys.append(budget.key)
            args += (budget.limit, n, budget.expire_at)
        args.append(len(spend))
    return keys, args


def _reservation(raw: bytes | str, n: int) -> Reservation:
    """``ratelimit_reserve.lua``'s reply for ``n`` buckets."""
    reply = _ints(raw)
    end = 1 + 6 * n
    takes = [
        Take(reply[i] == 1, reply[i + 1], reply[i + 2], reply[i + 3]) for i in range(1, end, 6)
    ]
    held = [SpendTake(reply[i] == 1, reply[i + 1]) for i in range(end, len(reply), 2)]
    return Reservation(reply[0] == 1, takes, held)


def _ints(reply: bytes | str) -> list[int]:
    """A script's reply: space-separated integers in one string (see the .lua headers)."""
    return [int(x) for x in reply.split()]


def _is_outage(exc: Exception) -> bool:
    """Errors that mean "not now" rather than "wrong": loading, cluster down, a primary
    that became a replica, a busy script, or a cluster client with no reachable node.
    A CROSSSLOT (the cluster client's own "same key slot" check, or the server's) is
    a bug, not an outage."""
    msg = str(exc)
    if isinstance(exc, RedisClusterException):
        return "same key slot" not in msg
    return msg.startswith(("LOADING", "CLUSTERDOWN", "READONLY", "BUSY", "MASTERDOWN", "TRYAGAIN"))
