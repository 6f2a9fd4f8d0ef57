"""The limit stage's half of budgets: which counters a request holds, and how much.

A principal's budgets (its key's, its team's) become ``store.base.Budget`` counters
for the current UTC period (``records.period``), all under the ``{rl}`` hash tag
(so they share a slot with every rate-limit key of a request that has a budget:
see ``pipeline/ratelimit.py``). The hold is the request's maximum possible cost:
its prompt tokens (exact for OpenAI's tokenizers, an estimate for others) at the
input price plus its maximum output at the output price, where the maximum output
is ``max_tokens``/``max_completion_tokens`` (times ``n``) or else the model's own
output cap (``pricing.output_cap``; ``limits.default_max_tokens`` when unknown,
which is then an estimate, not a bound). The most over every deployment the
request may reach (its plan and its fallbacks) is held, since any of them may
serve it.

Admission is strict: a request is admitted only if every counter has room for
its whole hold (``used + hold <= limit``), so while the real cost stays within
the hold, spend never passes the budget, whatever the concurrency or the number
of replicas; the budget is left unused by less than one request's hold.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gateway import pricing
from gateway.store.base import Budget
from gateway.tenants.records import period

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gateway.pipeline.auth import BudgetLimit, Principal
    from gateway.pipeline.context import RequestContext
    from gateway.providers.base import Deployment

__all__ = ["budget_key", "counters", "max_cost"]


def budget_key(scope: str, ident: str, period_ident: str) -> str:
    return f"gw:{{rl}}:budget:{scope}:{ident}:{period_ident}"


def counters(p: Principal, now: float) -> list[tuple[Budget, BudgetLimit, int | None]]:
    """``(counter, its budget, reset unix second or None)`` per budget of ``p``."""
    out = []
    for b in p.budgets:
        per = period(b.period, now)
        counter = Budget(budget_key(b.scope, b.ident, per.ident), b.nano, per.expire_at)
        out.append((counter, b, per.reset_at))
    return out


def max_cost(ctx: RequestContext, deps: Iterable[Deployment], default_max: int) -> int:
    """Nano-USD: the most the request can cost on any of ``deps`` (all priced)."""
    endpoint = ctx.endpoint
    assert endpoint is not None
    best = 0
    sized: dict[tuple[str, int], tuple[int, int]] = {}
    for dep in deps:
        price = pricing.price_for(dep)
        if price is None:  # placement keeps budgeted requests off unpriced deployments
            continue
        cap = pricing.output_cap(dep) or default_max
        tokens = sized.get((dep.model, cap))
        if tokens is None:
            tokens = sized[(dep.model, cap)] = endpoint.estimate(ctx, dep, cap)
        prompt, out = tokens
        best = max(best, math.ceil((prompt * price.input + out * price.output) * 1000))
    # A charge rounds each token class to the nano-dollar: a few nano above the sum.
    return best + 4 if best else 0
