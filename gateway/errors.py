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
 ├── BudgetExceeded               429 insufficient_quota (a key's or team's USD budget)
 ├── ServiceUnavailable           503 service_unavailable
 └── UpstreamError                502 upstream_error — anything a provider did wrong
      ├── UpstreamStatus          the provider's own 4xx/429/5xx, mapped to our status
      ├── UpstreamTimeout         504 timeout (kind: connect, read, first_token, idle,
      │                           total, deadline)
      └── UpstreamUnavailable     502/503 connection refused, reset, bad response

Upstream errors carry how the attempt loop treats them as fields (``retry``,
``breaker``, ``retry_after``; the rules are in ``pipeline/classify.py``).

Every error renders as ``{"error": {"message", "type", "param", "code"}}`` in
``api/handlers.py``; nothing else ever reaches a client. Messages never carry
secrets: callers build them from names and statuses, not from values. An
``UpstreamError`` carries a provider's own words, which may echo the request's
credentials, so its constructor passes every text field through
``gateway.scrub.scrub`` (provider keys, bearer tokens, URL credentials masked).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from gateway.pipeline.classify import Retry, for_status
from gateway.pipeline.retry_after import wait_from
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


class BudgetExceeded(GatewayError):
    """OpenAI's own shape for a spent quota: 429, type and code ``insufficient_quota``."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"


class UpstreamError(GatewayError):
    """A provider failed; ``provider`` names it (never its URL or key).

    Its meaning for retries is a field, set here (``pipeline/classify.py`` has the
    rules): ``retry`` (any | elsewhere | never | context), ``breaker`` (counts against
    the deployment's breaker) and ``retry_after`` (seconds the provider asked for).
    An answer the gateway could not use (reset, malformed, cut short) is retried.
    """

    status = 502
    type = "upstream_error"
    code = "bad_gateway"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retry: Retry = "any",
        breaker: bool = True,
        **kw: object,
    ) -> None:
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
        self.retry: Retry = retry
        self.breaker = breaker
        self.retry_after = wait_from(self.headers)


class UpstreamStatus(UpstreamError):
    """The provider answered with an error status; ``upstream_status`` keeps it, and
    decides the classification."""

    def __init__(self, message: str, *, provider: str, upstream_status: int, **kw: object) -> None:
        text = f"{kw.get('code') or ''} {kw.get('type') or ''} {message}"
        retry, breaker = for_status(upstream_status, text)
        super().__init__(message, provider=provider, retry=retry, breaker=breaker, **kw)
        self.upstream_status = upstream_status


TimeoutKind = Literal["connect", "read", "first_token", "idle", "total", "deadline"]


class UpstreamTimeout(UpstreamError):
    """A provider too slow; ``kind`` says for what. Any timeout of a deployment moves on
    to another one (``elsewhere``); the request's own ``deadline`` ends it (``never``,
    and not the deployment's fault)."""

    status = 504
    type = "timeout"
    code = "upstream_timeout"

    def __init__(
        self, message: str, *, provider: str, kind: TimeoutKind = "read", **kw: object
    ) -> None:
        deadline = kind == "deadline"
        super().__init__(
            message,
            provider=provider,
            retry="never" if deadline else "elsewhere",
            breaker=not deadline,
            **kw,
        )
        self.kind: TimeoutKind = kind


class UpstreamUnavailable(UpstreamError):
    """No usable answer: refused, reset, malformed or cut short. ``connect_failed``: the
    request never reached the provider (always safe to send again)."""

    code = "upstream_unavailable"

    def __init__(
        self, message: str, *, provider: str, connect_failed: bool = False, **kw: object
    ) -> None:
        super().__init__(message, provider=provider, **kw)  # type: ignore[arg-type]
        self.connect_failed = connect_failed


class ClientClosed(InvalidRequest):
    """The client closed the connection before its request body was complete: a 400 that
    the closed connection never receives; the edge counts it as 499."""

    code = "client_closed_request"
