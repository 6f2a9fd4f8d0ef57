"""Reading and validating request bodies: caps, JSON, depth, schema.

Every failure is a GatewayError with a 4xx status and, for schema errors, the
``param`` path that was wrong (``messages[0].role``).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from litestar import Request

from gateway.errors import InvalidJSON, InvalidRequest, PayloadTooLarge

T = TypeVar("T")
_AT = re.compile(r"\s*-\s*at\s*`\$\.?(.*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")


async def read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The whole body, refusing anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequest("Content-Length is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"Request body is {size} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
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
