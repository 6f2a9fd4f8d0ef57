"""Request contexts as the pipeline's stages see them, for tests that drive one stage."""

from __future__ import annotations

from typing import Any

from gateway.api.chat import CHAT
from gateway.pipeline.context import RequestContext
from gateway.pipeline.endpoint import Endpoint


def context_for(
    body: dict[str, Any],
    *,
    endpoint: Endpoint = CHAT,
    principal: Any = None,
    group: Any = None,
    dep: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> RequestContext:
    """A context after ``parse`` (and ``auth``/``route`` when given their results)."""
    ctx = RequestContext("test-request", 0.0, "POST", endpoint.path)
    ctx.scope = {"type": "http", "headers": headers or []}  # type: ignore[typeddict-item]
    ctx.endpoint = endpoint
    ctx.body = body
    ctx.model = str(body.get("model", ""))
    ctx.stream = bool(body.get("stream"))
    ctx.principal, ctx.group, ctx.dep = principal, group, dep
    if dep is not None:
        ctx.plan = [dep]
    return ctx
