"""Stage ``route``: the model's group -> ``ctx.plan``, the deployments in the order to try.

The plan is made once per request (``routing.Router.plan``: the alias's
strategy, then the deployments that cannot serve now moved to the end), kept to
the deployments the principal may reach (``placement``: its regions; priced ones
for a budget), and a sticky session's deployment put first when it can serve
(``tenants/sessions.py``); the attempt loop walks it. ``ctx.dep`` is its first
deployment, the one the rate limiter reserves for. Strategies that price a request
(``lowest-cost``) size it from the endpoint's OpenAI-chat view of the body.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from gateway.pipeline import placement
from gateway.tokencount import count_chat_tokens

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.reply import Reply
    from gateway.pipeline.routing import Router
    from gateway.providers.registry import ModelGroup
    from gateway.tenants.sessions import Sessions

__all__ = ["Route", "estimate_prompt_tokens", "max_tokens_of"]


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of an OpenAI-shaped body (chat: exact; anything else: a rough share)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        try:
            return int(count_chat_tokens(messages, str(body.get("model", "")), body.get("tools")))
        except (TypeError, ValueError):
            return len(str(messages)) // 4
    inp = body.get("input")
    return len(str(inp)) // 4 if inp is not None else 0


def max_tokens_of(body: dict[str, Any]) -> int | None:
    v = body.get("max_completion_tokens") or body.get("max_tokens")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class Route:
    name = "route"

    def __init__(
        self,
        router: Router,
        groups: dict[str, ModelGroup] | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self.router = router
        self.groups = groups or {}
        self.sessions = sessions

    def early(self, ctx: RequestContext) -> bool:
        """Route ``ctx`` now, for stage ``cache`` (which then sends the reservation with its
        lookup), if that takes no I/O and cannot refuse: no sticky session to read, no
        region or budget constraint. False: not routed; the stage runs in its place as usual."""
        if placement.constrained(ctx.principal):
            return False
        sessions = self.sessions
        if sessions is not None and sessions.wanted(ctx) is not None:
            return False
        self(ctx)
        return True

    def __call__(self, ctx: RequestContext) -> Reply | Awaitable[None] | None:
        if ctx.routed:  # early, by stage cache
            return None
        ctx.routed = True
        group, endpoint = ctx.group, ctx.endpoint
        assert group is not None and endpoint is not None
        if group.strategy == "lowest-cost" and len(group.deployments) > 1:
            sizing = endpoint.sizing(ctx)
            plan = self.router.plan(
                group,
                stream=ctx.stream,
                prompt_tokens=estimate_prompt_tokens(sizing),
                max_tokens=max_tokens_of(sizing),
            )
        else:
            plan = self.router.plan(group, stream=ctx.stream)
        principal = ctx.principal
        if placement.constrained(principal):
            assert principal is not None
            plan = placement.only_allowed(principal, plan)
            if not plan:  # the fallbacks may have somewhere to go; else nowhere
                first = next(placement.reachable(self.groups, group, principal), None)
                if first is None:
                    raise placement.refusal(principal, group)
                ctx.plan, ctx.dep, ctx.provider = [], first, first.provider
                return None
        ctx.plan = plan
        dep = ctx.dep = plan[0]
        ctx.provider = dep.provider
        sessions = self.sessions
        if sessions is not None and len(plan) > 1:
            sid = sessions.wanted(ctx)
            if sid is not None:
                return sessions.place(ctx, self.router, sid)  # a stored session: one read
        return None
