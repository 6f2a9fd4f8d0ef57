"""Secrets out of upstream text, before the gateway relays it to a client or logs it.

An upstream, or a proxy in front of it, may echo the request's headers in its error
text; relayed word for word, the gateway's provider key would reach the client. So
every upstream-derived text passes through ``scrub()`` in two central places:
``UpstreamError`` (``gateway/errors.py``) scrubs its message, type, param, code and
headers when it is built, which covers every error body and stream error event, and
the JSON log formatter (``telemetry/logging.py``) scrubs every event line. Replaced
by ``***``, the rest of the text kept:

- every provider key the gateway sends (``register()``, called by the registry for
  each deployment it builds), whatever its shape;
- credentials in URLs: ``https://user:pw@host`` becomes ``https://***@host``;
- ``Bearer``/``Basic`` credentials, and the value after a credential's name written
  as ``name: value`` or ``name=value`` (``authorization``, ``x-api-key``, ``api-key``,
  ``x-goog-api-key``, ``access_token``...), JSON and Python reprs included;
- query parameters ``?key=``, ``&api_key=``, ``&token=``...;
- key-shaped tokens: ``sk-...`` (OpenAI, Anthropic's ``sk-ant-...``), ``AIza...``
  (Google).

The registered keys are process-wide: they are configuration, fixed at start-up, and
every raise site must see them without carrying them. Imports nothing from
``gateway``, so ``errors.py`` can use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "register", "scrub"]

MASK = "***"

_VALUE = r"[^\s\"'`,;&<>(){}\[\]]+"
_PATTERN = re.compile(
    # scheme://user:password@  ->  scheme://***@
    r"(?P<url>\b[a-z][a-z0-9+.\-]*://)[^\s/@\"'<>]+@"
    # a credential's name, a separator, then its value (with its Bearer/Basic word)
    r"|(?P<name>\b(?:proxy-authorization|authorization|x-goog-api-key|x-api-key|api[-_]?key"
    r"|apikey|access[-_]token|x-auth-token|client[-_]secret|secret[-_]key))"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?" + _VALUE +
    # ?key=... &token=...
    r"|(?P<query>[?&](?:key|api[-_]?key|access_token|token)=)[^&\s\"'#<>]+"
    # Bearer <token>, Basic <base64> (RFC 6750 b64token characters)
    r"|(?P<scheme>\b(?:bearer|basic))\s+[A-Za-z0-9\-._~+/]{6,}=*"
    # key shapes
    r"|\bsk-[A-Za-z0-9_\-]{12,}"
    r"|\bAIza[0-9A-Za-z_\-]{20,}",
    re.IGNORECASE,
)


def _mask(m: re.Match[str]) -> str:
    if m.group("url"):
        return m.group("url") + MASK + "@"
    if m.group("name"):
        return m.group("name") + m.group("sep") + MASK
    if m.group("query"):
        return m.group("query") + MASK
    if m.group("scheme"):
        return m.group("scheme") + " " + MASK
    return MASK


class _Keys:
    """The provider keys of this process, longest first (a key containing another one
    is masked whole)."""

    def __init__(self) -> None:
        self.ordered: tuple[str, ...] = ()

    def add(self, secrets: Iterable[str | None]) -> None:
        known = set(self.ordered)
        added = {s for s in secrets if s and s not in known}
        if added:
            self.ordered = tuple(sorted(known | added, key=len, reverse=True))


_KEYS = _Keys()


def register(secrets: Iterable[str | None]) -> None:
    """Mask these provider keys from now on (start-up; idempotent)."""
    _KEYS.add(secrets)


def scrub(text: str) -> str:
    """``text`` with every registered key and anything shaped like a credential masked."""
    if not text:
        return text
    for secret in _KEYS.ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return _PATTERN.sub(_mask, text)
