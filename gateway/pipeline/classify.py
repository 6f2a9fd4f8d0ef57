"""What an upstream failure means for the attempt loop: the rules, in one place.

Every ``UpstreamError`` carries its classification as fields, set when it is made
(``gateway/errors.py`` calls the functions here):

``retry``
    ``any``: try again, the same deployment included (a connection refused or reset
    before it reached the provider; statuses 429, 500, 502, 503, 504, 529; an answer
    the gateway could not use: reset, malformed JSON, a stream cut before its first
    content).
    ``elsewhere``: another deployment or the fallbacks, never the same one (a timeout:
    connect, first token, a whole answer's read: the deployment accepts and hangs,
    and repeating it would spend the deadline again; an upstream 401/403: the
    gateway's own key refused; 501, 505...: this deployment cannot serve it).
    ``never``: not a deployment's fault and not retried (a client's 4xx; the
    request's own deadline).
    ``context``: the prompt does not fit the context window: the alias's
    ``context_fallback`` may take it.
``breaker``
    Does it count against the deployment's circuit breaker? Failures of the
    deployment do; a client's 4xx, a context-length error and the request's own
    deadline do not.
``retry_after``
    Seconds the upstream asked to be left alone (``retry_after.wait_from``), or None.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["CONTEXT_MARKERS", "RETRY_STATUSES", "Retry", "for_status", "is_context_text"]

Retry = Literal["any", "elsewhere", "never", "context"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
# How providers say "the prompt does not fit the context window" (lower case).
CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "context_window",
    "maximum context",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "exceeds the maximum number of tokens",
    "input token count",
    "reduce the length of the messages",
)


def is_context_text(status: int, text: str) -> bool:
    if status not in (400, 413, 422):
        return False
    low = text.lower()
    return any(m in low for m in CONTEXT_MARKERS)


def for_status(status: int, text: str) -> tuple[Retry, bool]:
    """``(retry, breaker)`` for an upstream's error status; ``text`` is its code, type
    and message (to recognise a context-length error)."""
    if status in RETRY_STATUSES:
        return "any", True
    if status in (401, 403):
        return "elsewhere", True
    if 400 <= status < 500:
        return ("context" if is_context_text(status, text) else "never"), False
    return "elsewhere", True  # 501, 505...: this deployment cannot serve it
