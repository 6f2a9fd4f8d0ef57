"""JSON logs to stdout: one object per line, never a key or a prompt.

``configure()`` sets up stdlib logging with a JSON formatter for everything
that is not per request. The formatter passes the message, every text field and
the traceback through ``gateway.scrub.scrub``: an exception or a field may carry
an upstream's words, which may echo a provider key or URL credentials. The
access log, written once per request, skips the logging machinery: ``access()``
encodes with msgspec and writes one line of ids, labels and numbers.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.scrub import scrub

if TYPE_CHECKING:
    from gateway.errors import GatewayError
    from gateway.pipeline.context import RequestContext
    from gateway.providers.base import Deployment

_encoder = msgspec.json.Encoder()
_provider_log = logging.getLogger("gateway.provider")
DEBUG_LOG = logging.getLogger("gateway.attempts")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        extra = getattr(record, "fields", None)
        if extra:
            out.update({k: scrub(v) if isinstance(v, str) else v for k, v in extra.items()})
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["traceback"] = scrub(self.formatException(record.exc_info))
        return _encoder.encode(out).decode()


def configure(level: str) -> AccessLog:
    """Set up stdlib logging at ``level``; the access log that goes with it."""
    root = logging.getLogger()
    root.handlers[:] = []
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, 20))
    for noisy in ("httpx", "httpcore", "aiohttp", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return AccessLog(enabled=_LEVELS.get(level, 20) <= 20)


class AccessLog:
    """The per-request access line (the edge writes one per request); off above ``info``."""

    __slots__ = ("enabled",)

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled

    def write(self, fields: dict[str, Any]) -> None:
        """One line; ``fields`` holds ids, labels, numbers: never content."""
        if not self.enabled:
            return
        fields["ts"] = round(time.time(), 3)
        fields["level"] = "info"
        fields["logger"] = "access"
        try:
            os.write(1, _encoder.encode(fields) + b"\n")
        except OSError:  # stdout closed: logging must never fail a request
            pass


def provider_error(
    ctx: RequestContext | None, dep: Deployment, err: GatewayError, *, mid_stream: bool
) -> None:
    """One ``provider_error`` event per failed upstream attempt: which provider, what it
    answered, and how the attempt loop classifies it (``retry``: any, elsewhere, never,
    context; ``breaker``: counts against the deployment; ``retry_after``: seconds the
    provider asked for). Warning, except a client's own mistake passed on (a 4xx that
    is neither retried nor the deployment's fault), which is info. The message is not
    logged: an upstream may quote the request's content in it."""
    status = getattr(err, "upstream_status", None) or err.status
    retry = getattr(err, "retry", "never")
    breaker = bool(getattr(err, "breaker", False))
    fields: dict[str, Any] = {
        "event": "provider_error",
        "provider": dep.provider,
        "model": dep.label,
        "upstream_model": dep.model,
        "status": status,
        "type": err.type,
        "code": err.code,
        "retry": retry,
        "breaker": breaker,
        "retry_after": getattr(err, "retry_after", None),
        "phase": "mid_stream" if mid_stream else "before_first_byte",
    }
    kind = getattr(err, "kind", None)
    if kind is not None:
        fields["timeout"] = kind
    if ctx is not None:
        fields["request_id"] = ctx.request_id
        fields["attempt"] = ctx.attempts
        trace = ctx.trace
        if trace is not None:
            fields["trace_id"] = trace.trace_id
    client_fault = retry == "never" and not breaker and 400 <= status < 500
    level = logging.INFO if client_fault else logging.WARNING
    _provider_log.log(level, "provider_error", extra={"fields": fields})


def upstream_attempt(ctx: RequestContext, dep: Deployment, why: str) -> None:
    """Debug: each upstream attempt as it starts (ids and names only, never a header)."""
    fields = {
        "request_id": ctx.request_id,
        "provider": dep.provider,
        "model": dep.label,
        "upstream_model": dep.model,
        "reason": why,
        "attempt": ctx.attempts,
    }
    DEBUG_LOG.debug("upstream_attempt", extra={"fields": fields})
