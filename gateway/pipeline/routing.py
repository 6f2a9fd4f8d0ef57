"""Stage 4: a model group to the ordered deployments to try. No I/O.

``Router.plan(group)`` orders a group's deployments by the alias's strategy, then
moves the ones that cannot serve now behind the ones that can: a deployment whose
breaker is open (ejected) or that asked to be left alone (a 429's Retry-After) is
tried only when nothing else is left. The first deployment is the one to use; the
attempt loop (``attempts.py``) walks the rest on retries.

Strategies:

``weighted``       random, in proportion to ``weight`` (sampling without replacement)
``least-latency``  lowest EWMA of time to first token (streams) or of total latency
                   (whole answers); a deployment never measured goes first, and a
                   share ``routing.exploration`` of requests puts a random other one
                   first so a deployment that was slow is measured again and wins
                   back its traffic when it recovers
``lowest-cost``    lowest price x (estimated prompt tokens, max output tokens)
``least-busy``     fewest requests in flight (divided by weight)
``priority``       the lowest ``priority`` tier first (weighted within a tier); the
                   next tier only on failure or when the tier's breakers are open

The router also keeps what those need per deployment: in-flight counts, latency
EWMAs, the Retry-After cool-down, and the circuit breaker (``breaker.py``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import RoutingOptions
from gateway.pipeline.breaker import CLOSED, OPEN, Breaker, link
from gateway.providers.base import Deployment
from gateway.providers.registry import ModelGroup
from gateway.telemetry import metrics

EWMA_ALPHA = 0.3
DEFAULT_MAX_TOKENS = 1024  # lowest-cost: output tokens assumed when a request sets none
MAX_STATES = 4096  # deployments tracked; idle ones outside configured groups are dropped


@dataclass(eq=False, slots=True)
class DeploymentState:
    """What the router knows about one deployment (process-local)."""

    breaker: Breaker
    in_flight: int = 0
    ewma_ttft: float | None = None  # s, streams: request sent -> first content event
    ewma_total: float | None = None  # s, request sent -> last byte
    samples: int = 0
    cooldown_until: float = 0.0  # a 429's Retry-After: not before this (monotonic)
    group: str = ""

    def observe(self, ttft: float | None = None, total: float | None = None) -> None:
        if ttft is not None:
            e = self.ewma_ttft
            self.ewma_ttft = ttft if e is None else e + EWMA_ALPHA * (ttft - e)
        if total is not None:
            e = self.ewma_total
            self.ewma_total = total if e is None else e + EWMA_ALPHA * (total - e)
        self.samples += 1

    def latency(self, stream: bool) -> float | None:
        if stream:
            return self.ewma_ttft if self.ewma_ttft is not None else self.ewma_total
        return self.ewma_total if self.ewma_total is not None else self.ewma_ttft


@dataclass(eq=False)
class _Counters:
    requests: int = 0  # requests in flight through the attempt loop
    retries: int = 0  # retry (and hedge) attempts in flight


class Router:
    def __init__(
        self,
        options: RoutingOptions | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options or RoutingOptions()
        self._rng = rng or random.Random()
        self.clock = clock
        self._states: dict[Deployment, DeploymentState] = {}
        self._groups: dict[str, ModelGroup] = {}
        self.active = _Counters()

    # -- per-deployment state ----------------------------------------------------------

    def register(self, group: ModelGroup) -> None:
        """Create the state of a group's deployments (once; ad-hoc groups on first use)."""
        if self._groups.get(group.name) is group:
            return
        for dep in group.deployments:
            self.state(dep).group = group.name
        link([self._states[d].breaker for d in group.deployments])
        self._groups[group.name] = group

    def state(self, dep: Deployment) -> DeploymentState:
        st = self._states.get(dep)
        if st is None:
            if len(self._states) >= MAX_STATES:
                self._prune()
            st = self._states[dep] = DeploymentState(
                Breaker(self.options.breaker, self.clock, self._breaker_changed(dep))
            )
        return st

    def _prune(self) -> None:
        """Forget idle single deployments (ad-hoc ``provider/model`` names past the
        registry's cache are new objects on every request)."""
        for d in [d for d, st in self._states.items() if not st.group and not st.in_flight]:
            del self._states[d]

    def _breaker_changed(self, dep: Deployment) -> Callable[[Breaker], None]:
        def changed(b: Breaker) -> None:
            # several deployments may share (provider, alias): the gauge shows the worst
            worst = max(
                (
                    s.breaker.state
                    for d, s in self._states.items()
                    if d.provider == dep.provider and d.label == dep.label
                ),
                default=b.state,
            )
            metrics.llm_breaker_state.labels(dep.provider, dep.label).set(max(worst, b.state))
            if b.state == OPEN:
                metrics.llm_breaker_ejections_total.labels(dep.provider, dep.label).inc()

        return changed

    def jitter(self, cap: float) -> float:
        """A uniform wait in ``[0, cap]`` (full-jitter backoff), from the router's RNG."""
        return self._rng.uniform(0.0, cap)

    def cool_down(self, dep: Deployment, seconds: float) -> None:
        st = self.state(dep)
        st.cooldown_until = max(st.cooldown_until, self.clock() + seconds)

    def usable(self, dep: Deployment, now: float | None = None) -> bool:
        """Breaker lets it through and no Retry-After is pending."""
        st = self.state(dep)
        now = self.clock() if now is None else now
        return st.breaker.available(now) and st.cooldown_until <= now

    # -- ordering ----------------------------------------------------------------------

    def plan(
        self,
        group: ModelGroup,
        *,
        stream: bool = False,
        prompt_tokens: int = 0,
        max_tokens: int | None = None,
    ) -> list[Deployment]:
        """Deployments in the order to try them: the first is the one to use now."""
        deps = group.deployments
        if len(deps) == 1:
            return [deps[0]]
        self.register(group)
        s = group.strategy
        if s == "least-latency":
            order = self._least_latency(deps, stream)
        elif s == "lowest-cost":
            order = self._lowest_cost(deps, prompt_tokens, max_tokens)
        elif s == "least-busy":
            order = self._least_busy(deps)
        elif s == "priority":
            order = self._priority(deps)
        else:
            order = self._weighted_order(deps)
        return self._healthy_first(order)

    def _healthy_first(self, order: list[Deployment]) -> list[Deployment]:
        now = self.clock()
        ready: list[Deployment] = []
        cooling: list[Deployment] = []
        ejected: list[Deployment] = []
        for d in order:
            st = self.state(d)
            if not st.breaker.available(now):
                ejected.append(d)
            elif st.cooldown_until > now:
                cooling.append(d)
            else:
                ready.append(d)
        if not cooling and not ejected:
            return order
        cooling.sort(key=lambda d: self.state(d).cooldown_until)
        return ready + cooling + ejected

    def _weighted_order(self, deps: tuple[Deployment, ...] | list[Deployment]) -> list[Deployment]:
        # Weighted sampling without replacement (Efraimidis-Spirakis keys).
        rnd = self._rng.random
        keyed = [
            (rnd() ** (1.0 / d.weight) if d.weight > 0 else -1.0 - rnd(), i)
            for i, d in enumerate(deps)
        ]
        keyed.sort(reverse=True)
        return [deps[i] for _, i in keyed]

    def _least_latency(self, deps: tuple[Deployment, ...], stream: bool) -> list[Deployment]:
        rnd = self._rng.random

        def key(d: Deployment) -> tuple[float, float]:
            lat = self.state(d).latency(stream)
            return (-1.0 if lat is None else lat, rnd())  # never measured: try it first

        order = sorted(deps, key=key)
        eps = self.options.exploration
        if eps > 0 and rnd() < eps:
            k = 1 + int(rnd() * (len(order) - 1))
            order.insert(0, order.pop(k))
        return order

    def _lowest_cost(
        self, deps: tuple[Deployment, ...], prompt_tokens: int, max_tokens: int | None
    ) -> list[Deployment]:
        out_tokens = max_tokens if max_tokens and max_tokens > 0 else DEFAULT_MAX_TOKENS
        rnd = self._rng.random

        def key(d: Deployment) -> tuple[float, float]:
            return (estimated_cost(d, prompt_tokens, out_tokens), rnd())

        return sorted(deps, key=key)

    def _least_busy(self, deps: tuple[Deployment, ...]) -> list[Deployment]:
        rnd = self._rng.random

        def key(d: Deployment) -> tuple[float, float]:
            n = self.state(d).in_flight
            return (n / d.weight if d.weight > 0 else float("inf"), rnd())

        return sorted(deps, key=key)

    def _priority(self, deps: tuple[Deployment, ...]) -> list[Deployment]:
        tiers: dict[int, list[Deployment]] = {}
        for d in deps:
            tiers.setdefault(d.priority, []).append(d)
        out: list[Deployment] = []
        for p in sorted(tiers):
            tier = tiers[p]
            out.extend(self._weighted_order(tier) if len(tier) > 1 else tier)
        return out

    # -- reporting ---------------------------------------------------------------------

    def health(self, groups: dict[str, ModelGroup]) -> dict[str, object]:
        """Per alias: strategy and each deployment's breaker, load and latency."""
        out: dict[str, object] = {}
        for name, g in groups.items():
            self.register(g)
            deps = []
            for d in g.deployments:
                st = self.state(d)
                entry: dict[str, object] = {"provider": d.provider, "model": d.model}
                entry["breaker"] = st.breaker.snapshot()
                entry["in_flight"] = st.in_flight
                if st.ewma_ttft is not None:
                    entry["ttft_ms"] = round(st.ewma_ttft * 1000, 1)
                if st.ewma_total is not None:
                    entry["latency_ms"] = round(st.ewma_total * 1000, 1)
                deps.append(entry)
            out[name] = {"strategy": g.strategy, "deployments": deps}
        return out

    def open_breakers(self) -> int:
        now = self.clock()
        return sum(1 for st in self._states.values() if st.breaker.current(now) != CLOSED)


def estimated_cost(dep: Deployment, prompt_tokens: int, out_tokens: int) -> float:
    """USD for one request at the deployment's price (unknown price: infinitely dear)."""
    p = dep.price
    if p is None:
        return float("inf")
    return (p.input * prompt_tokens + p.output * out_tokens) / 1_000_000
