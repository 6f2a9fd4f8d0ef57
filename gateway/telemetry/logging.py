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
from typing import Any

import msgspec

from gateway.scrub import scrub

_encoder = msgspec.json.Encoder()
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
