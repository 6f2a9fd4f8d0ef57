"""Pipeline endpoints as Litestar ``asgi`` route handlers.

Litestar routes the request (and answers 404 for unknown paths); the handler
takes the ``RequestContext`` the edge made, runs the one pipeline for its
endpoint and writes the ``Reply`` straight to ASGI. No Litestar ``Request`` or
``Response`` object is built on this path. Only POST is served; any other
method is a 405 in the endpoint's error shape with ``Allow: POST``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.handlers import ASGIRouteHandler

from gateway.errors import MethodNotAllowed
from gateway.pipeline.context import context_of
from gateway.pipeline.reply import Reply, send_reply

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

    from gateway.pipeline.endpoint import Endpoint
    from gateway.pipeline.run import Pipeline

__all__ = ["endpoint_route"]


def endpoint_route(endpoint: Endpoint, pipeline: Pipeline) -> ASGIRouteHandler:
    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
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
            reply = await pipeline.run(endpoint, ctx)
        await send_reply(reply, send)

    return ASGIRouteHandler(endpoint.path, copy_scope=False, name=endpoint.name)(handle)
