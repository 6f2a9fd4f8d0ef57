"""Stage ``parse``: the body read from ASGI, decoded, and checked against the endpoint.

Every failure is a GatewayError with a 4xx status and, for schema errors, the
``param`` path that was wrong (``messages[0].role``). A client that disconnects
while sending its body raises ``ClientClosed`` (the edge counts it as 499).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from gateway.errors import ClientClosed, InvalidJSON, InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from litestar.types import Receive, Scope

    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.reply import Reply
    from gateway.settings import Settings

T = TypeVar("T")
_AT = re.compile(r"\s*-\s*at\s*`\$\.?(.*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def header(scope: Scope, name: bytes) -> str | None:
    """One request header (the first), decoded as latin-1; None when absent."""
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing anything over ``limit`` bytes without reading it all."""
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 20:
            raise InvalidRequest("Content-Length is not a number")
        size = int(declared)
        if size > limit:
            raise PayloadTooLarge(f"Request body is {size} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client left
            raise ClientClosed("The client closed the connection before its body was complete")
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _depth_exceeds(obj: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def decode_object(body: bytes, max_depth: int) -> dict[str, Any]:
    """Decode a JSON object body; 400 on bad JSON, bad UTF-8, or nesting past ``max_depth``."""
    if not body:
        raise InvalidJSON("Request body is empty; expected a JSON object")
    try:
        obj = msgspec.json.decode(body)
    except UnicodeDecodeError:
        raise InvalidJSON("Request body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidJSON(f"JSON is nested deeper than {max_depth} levels") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        detail = str(exc)
        if "truncated" in detail and b"\\u" in body:
            detail = "invalid \\u escape (lone surrogates are not allowed)"
        raise InvalidJSON(f"Request body is not valid JSON: {detail}") from None
    if not isinstance(obj, dict):
        raise InvalidJSON(f"Request body must be a JSON object, not {type(obj).__name__}")
    # Cheap bound first: a body with few brackets cannot be deep.
    if body.count(b"{") + body.count(b"[") > max_depth and _depth_exceeds(obj, max_depth):
        raise InvalidJSON(f"JSON is nested deeper than {max_depth} levels")
    return obj


def validate(obj: dict[str, Any], type_: type[T]) -> T:
    try:
        return msgspec.convert(obj, type_)
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = _AT.search(text)
        problem = text[: m.start()] if m else text
        param = m.group(1) if m else None
        if param is None:
            missing = _MISSING.search(text)
            if missing:
                param = missing.group(1)
        where = f" at `{param}`" if param else ""
        raise InvalidRequest(f"Invalid request{where}: {problem}", param=param) from None


class Parse:
    """Body -> ``ctx.body`` (the dict that is forwarded), ``ctx.request`` (the endpoint's
    validated Struct), ``ctx.model`` and ``ctx.stream``."""

    name = "parse"

    def __init__(self, settings: Settings) -> None:
        self.limit = settings.max_body_bytes
        self.depth = settings.max_json_depth

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        endpoint = ctx.endpoint
        assert endpoint is not None and ctx.scope is not None and ctx.receive is not None
        body = decode_object(await read_body(ctx.scope, ctx.receive, self.limit), self.depth)
        ctx.body = body
        request = validate(body, endpoint.request_type)
        ctx.request = request
        ctx.model = endpoint.model(request)
        ctx.stream = endpoint.stream(request)
        return None
