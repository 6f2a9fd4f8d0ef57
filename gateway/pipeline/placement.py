"""Where a principal's request may go: the one filter every plan passes through.

A key (or its team) pinned to regions may only reach deployments whose config
``region`` is one of them (a deployment without a ``region`` is outside every
pin: its residency is unknown). A key or team with a budget may only reach
deployments with a price (config ``price:`` or the shipped table): the cost of an
unpriced model cannot be bounded, so it could not be reserved.

``allowed`` is applied by stage ``route`` to the request's plan and by the attempt
loop to every fallback alias's plan (``attempts.Loop._plan``), so retries, hedges
(they walk the plan) and fallbacks alike never leave it. When the model's own
alias has no allowed deployment, but a fallback has, the request goes there; when
none of them has one, stage ``route`` answers 403 naming the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway import pricing
from gateway.errors import PermissionDenied

if TYPE_CHECKING:
    from gateway.pipeline.auth import Principal
    from gateway.providers.base import Deployment
    from gateway.providers.registry import ModelGroup

__all__ = ["allowed", "constrained", "reachable", "refusal"]


def constrained(p: Principal | None) -> bool:
    """Does anything restrict where ``p``'s requests go? (Most principals: no.)"""
    return p is not None and (p.regions is not None or bool(p.budgets))


def allowed(p: Principal | None, dep: Deployment) -> bool:
    if p is None:
        return True
    if p.regions is not None and dep.region not in p.regions:
        return False
    return not (p.budgets and pricing.price_for(dep) is None)


def only_allowed(p: Principal | None, plan: list[Deployment]) -> list[Deployment]:
    if not constrained(p):
        return plan
    return [d for d in plan if allowed(p, d)]


def reachable(
    groups: dict[str, ModelGroup], group: ModelGroup, p: Principal | None
) -> Iterator[Deployment]:
    """Every allowed deployment of ``group`` and of the aliases it may fall back to
    (``fallbacks`` and ``context_fallback``, transitively)."""
    queue, seen = [group], {group.name}
    while queue:
        g = queue.pop(0)
        yield from (d for d in g.deployments if allowed(p, d))
        for name in (*g.fallbacks, *((g.context_fallback,) if g.context_fallback else ())):
            nxt = groups.get(name)
            if nxt is not None and name not in seen:
                seen.add(name)
                queue.append(nxt)


def refusal(p: Principal, group: ModelGroup) -> PermissionDenied:
    """The 403 for a request with nowhere to go, naming why."""
    deps = group.deployments
    model = repr(group.label)
    if p.regions is not None and not any(d.region in p.regions for d in deps):
        where = ", ".join(sorted(p.regions)) or "none"
        return PermissionDenied(
            f"No deployment of model {model} (or its fallbacks) is in a region this API key "
            f"may use ({where}).",
            param="model",
            code="region_not_allowed",
        )
    return PermissionDenied(
        f"This API key has a spend budget, and model {model} (or its fallbacks) has no "
        "known price in the allowed regions, so its cost cannot be reserved. Set a price "
        "on its deployments (price:) or use a priced model.",
        param="model",
        code="model_unpriced",
    )
