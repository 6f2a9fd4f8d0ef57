"""Stage 4: a model group to the ordered deployments to try. Pure; no I/O."""

from __future__ import annotations

import random

from gateway.providers.base import Deployment
from gateway.providers.registry import ModelGroup


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def plan(self, group: ModelGroup) -> list[Deployment]:
        """Deployments in the order to try them: the first is the one to use now."""
        deps = group.deployments
        if len(deps) == 1:
            return [deps[0]]
        if group.strategy == "priority":
            return sorted(deps, key=lambda d: d.priority)
        return self._weighted_order(deps)

    def _weighted_order(self, deps: tuple[Deployment, ...]) -> list[Deployment]:
        # Weighted sampling without replacement (Efraimidis-Spirakis keys).
        keyed = [
            (self._rng.random() ** (1.0 / d.weight) if d.weight > 0 else -1.0, i)
            for i, d in enumerate(deps)
        ]
        keyed.sort(reverse=True)
        return [deps[i] for _, i in keyed]
