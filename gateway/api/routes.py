"""Pipeline endpoints, dispatched by the edge straight to the one pipeline.

Every pipeline endpoint is a fixed path (no path parameters), so the edge finds
it with one dict lookup and hands it the request's ``RequestContext`` directly;
the handler runs the pipeline for its endpoint and writes the ``Reply`` straight
to ASGI. No Litestar ``Request`` or ``Response`` object is built on this path,
and Litestar's router and exception middleware are not crossed either: measured
with callgrind, they cost about 117,000 instructions per request (an eighth of
the whole request) and had nothing to add, since the pipeline renders every
error itself. Litestar serves every other route (models, health, admin) and
answers 404 for unknown paths. Only POST is served here; any other method is a
405 in the endpoint's error shape with ``Allow: POST``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import MethodNotAllowed
from gateway.pipeline.reply import Reply, send_reply

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.endpoint import Endpoint
    from gateway.pipeline.run import Pipeline

__all__ = ["EndpointApp"]


class EndpointApp:
    """One endpoint's handler: ``await app(ctx, scope, receive, send)``."""

    __slots__ = ("endpoint", "pipeline")

    def __init__(self, endpoint: Endpoint, pipeline: Pipeline) -> None:
        self.endpoint = endpoint
        self.pipeline = pipeline

    async def __call__(
        self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send
    ) -> None:
        endpoint = self.endpoint
        ctx.scope, ctx.receive = scope, receive
        method = scope["method"]  # type: ignore[typeddict-item]
        if method != "POST":
            ctx.endpoint = endpoint
            err = MethodNotAllowed(
                f"Method {method[:20]} is not allowed on {endpoint.path}",
                headers={"allow": "POST"},
            )
            ctx.error = err.code
            reply = Reply(err.status, err.headers, endpoint.errors.body(err))
        else:
            reply = await self.pipeline.run(endpoint, ctx)
        await send_reply(reply, send)
