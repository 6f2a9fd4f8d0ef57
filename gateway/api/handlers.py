"""Errors of the Litestar routes outside the pipeline (models, health, 404, 405) as the
OpenAI error envelope; nothing else reaches a client. The pipeline endpoints render
their own errors (``pipeline/run.py``) in their endpoint's shape."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway.errors import GatewayError
from gateway.pipeline.context import SCOPE_KEY, RequestContext
from gateway.wire.errors import ErrorBody, ErrorEnvelope

log = logging.getLogger("gateway.errors")
_encode = msgspec.json.Encoder().encode
_HTTP_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def _context(request: Request[Any, Any, Any]) -> RequestContext | None:
    ctx = request.scope.get(SCOPE_KEY)
    return ctx if isinstance(ctx, RequestContext) else None


def error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    body = _encode(ErrorEnvelope(ErrorBody(message, type_, param, code)))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def gateway_error_handler(request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    ctx = _context(request)
    if ctx is not None:
        ctx.error = exc.code or exc.type
    return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        return internal_error_handler(request, exc)
    type_, code = _HTTP_TYPES.get(status, ("invalid_request_error", None))
    if status == 404:
        message = f"Unknown path {request.method} {request.url.path[:200]}"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = str(exc.detail)[:500] or "Bad request"
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return error_response(status, message, type_, None, code, headers or None)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    ctx = _context(request)
    rid = ctx.request_id if ctx is not None else "-"
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"fields": {"request_id": rid, "error": type(exc).__name__}},
    )
    return error_response(
        500, f"Internal gateway error (request id {rid})", "api_error", None, "internal_error"
    )


exception_handlers: dict[Any, Any] = {
    GatewayError: gateway_error_handler,
    HTTPException: http_exception_handler,
    Exception: internal_error_handler,
}
