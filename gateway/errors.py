"""The gateway's error tree; each class knows its HTTP status and OpenAI error type.

GatewayError                      500 api_error
 ├── InvalidRequest               400 invalid_request_error
 │    ├── InvalidJSON             400 code=invalid_json
 │    ├── UnsupportedParameter    400 code=unsupported_parameter
 │    └── ClientClosed            400 code=client_closed_request (the edge counts 499)
 ├── AuthenticationFailed         401 authentication_error
 ├── PermissionDenied             403 permission_error
 ├── NotFound                     404 invalid_request_error  code=not_found
 │    └── ModelNotFound           404 invalid_request_error  code=model_not_found
 ├── MethodNotAllowed             405 invalid_request_error
 ├── PayloadTooLarge              413 invalid_request_error  code=request_too_large
 ├── UnsupportedMediaType         415 invalid_request_error
 ├── RateLimited                  429 rate_limit_error (carries Retry-After)
 ├── ServiceUnavailable           503 service_unavailable
 └── UpstreamError                502 upstream_error — anything a provider did wrong
      ├── UpstreamStatus          the provider's own 4xx/429/5xx, mapped to our status
      ├── UpstreamTimeout         504 timeout
      └── UpstreamUnavailable     502/503 connection refused, reset, bad response

Every error renders as ``{"error": {"message", "type", "param", "code"}}`` in
``api/handlers.py``; nothing else ever reaches a client. Messages never carry
secrets: callers build them from names and statuses, not from values. An
``UpstreamError`` carries a provider's own words, which may echo the request's
credentials, so its constructor passes every text field through
``gateway.scrub.scrub`` (provider keys, bearer tokens, URL credentials masked).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.scrub import scrub


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers: dict[str, str] = dict(headers) if headers else {}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"


class UpstreamError(GatewayError):
    """A provider failed; ``provider`` names it (never its URL or key)."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"

    def __init__(self, message: str, *, provider: str, **kw: object) -> None:
        # The one place every upstream-derived text passes: relayed, logged, or both.
        for field in ("param", "code", "type"):
            value = kw.get(field)
            if isinstance(value, str):
                kw[field] = scrub(value)
        headers = kw.get("headers")
        if isinstance(headers, Mapping):
            kw["headers"] = {k: scrub(str(v)) for k, v in headers.items()}
        super().__init__(scrub(message), **kw)  # type: ignore[arg-type]
        self.provider = provider


class UpstreamStatus(UpstreamError):
    """The provider answered with an error status; ``upstream_status`` keeps it."""

    def __init__(self, message: str, *, provider: str, upstream_status: int, **kw: object) -> None:
        super().__init__(message, provider=provider, **kw)
        self.upstream_status = upstream_status


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class ClientClosed(InvalidRequest):
    """The client closed the connection before its request body was complete: a 400 that
    the closed connection never receives; the edge counts it as 499."""

    code = "client_closed_request"
