"""How long a rate-limited upstream asks to be left alone, from its response headers.

Providers say it in four ways; the first one present wins, in this order (the
order the openai SDK reads them in, then the providers' own reset headers):

1. ``retry-after-ms``: milliseconds (OpenAI, Azure).
2. ``retry-after``: delay-seconds, or an HTTP date (RFC 9110 section 10.2.3).
3. OpenAI's and Azure's ``x-ratelimit-reset-requests`` / ``-tokens``: Go durations
   (``1.4s``, ``6m0s``, ``120ms``, ``1h2m3.5s``, ``0s``); plain seconds (``12``,
   seen from Azure) are read too.
4. Anthropic's ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset``:
   RFC 3339 times, turned into a wait against this host's clock.

**Which reset applies.** A 429 names no limit, but the ``*-remaining`` header beside
each reset does: the wait is the longest reset among the limits that read 0 (the
exhausted ones: waiting for only the shorter would meet the other still spent).
When none reads 0 (remaining headers absent, or a request larger than what is
left), the longest reset present is used: waiting too long on one deployment
costs a failover, waiting too short costs another 429.

Every value is adversarial: a malformed, negative, NaN or infinite value is
ignored (the next source is tried); none raises; and no wait is ever longer than
``MAX_WAIT`` (one hour: a daily quota's "12h" becomes "try again in an hour",
which is then answered by a fresh 429 with a fresh reset).

``client_hints()`` turns the wait into what the client gets with the gateway's
429: ``retry-after`` in whole seconds rounded up, and ``retry-after-ms``.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from datetime import datetime

MAX_WAIT = 3600.0  # s; no hint ever asks for longer than this
_MAX_VALUE_LEN = 64  # longer header values are not a duration or a date

# Go's time.ParseDuration units, in seconds (``us``, ``µs`` U+00B5 and ``μs`` U+03BC alike)
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# re.ASCII: \d is 0-9 only (float() would read other scripts' digits too)
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", re.ASCII)
_GO_DURATION = re.compile(r"(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+", re.ASCII)
_PLAIN_SECONDS = re.compile(r"\d{1,12}(?:\.\d{1,9})?", re.ASCII)

# the limits whose reset headers are read (each beside its *-remaining header)
_OPENAI_LIMITS = ("requests", "tokens")
_ANTHROPIC_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")


def _finite(value: float) -> float | None:
    """``value``, or None when it is negative or not a finite number."""
    if not math.isfinite(value) or value < 0:
        return None
    return value


def _capped(value: float | None) -> float | None:
    return None if value is None else min(value, MAX_WAIT)


def go_duration(value: str) -> float | None:
    """Seconds in a Go duration (``1h2m3.5s``, ``6m0s``, ``120ms``, ``0``), or in plain
    seconds (``12``, ``0.5``); None for anything else, a negative one included.
    Not capped: ``wait_from()`` and ``reset_wait()`` cap what they return."""
    s = value.strip()
    if not s or len(s) > _MAX_VALUE_LEN:
        return None
    if s.startswith("+"):
        s = s[1:]
    if _PLAIN_SECONDS.fullmatch(s):
        return _finite(float(s))
    if not _GO_DURATION.fullmatch(s):
        return None  # a sign, a bare ".", an unknown unit, spaces, garbage
    total = 0.0
    for number, unit in _GO_PART.findall(s):
        total += float(number) * _UNITS[unit]
    return _finite(total)


def rfc3339_wait(value: str, now: float | None = None) -> float | None:
    """Seconds from ``now`` (wall clock) until an RFC 3339 time; 0 when it has passed;
    None when it is not a time with an offset."""
    s = value.strip().upper()
    if not s or len(s) > _MAX_VALUE_LEN or "T" not in s:
        return None
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(s)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # RFC 3339 always has an offset; a local time is a guess
    try:
        at = when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return _finite(max(0.0, at - (time.time() if now is None else now)))


def _retry_after_value(value: str, now: float | None) -> float | None:
    s = value.strip()
    if not s or len(s) > _MAX_VALUE_LEN or not s.isascii():
        return None
    try:
        return _finite(float(s))  # delay-seconds ("1.5" is not RFC 9110, but unambiguous)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(s)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return _finite(max(0.0, when.timestamp() - (time.time() if now is None else now)))


def _spent(value: str | None) -> bool:
    if value is None:
        return False
    try:
        return float(value.strip()) <= 0
    except ValueError:
        return False


def reset_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait the providers' reset headers imply for a 429 (see the module docstring)."""
    found: list[tuple[float, bool]] = []
    for kind in _OPENAI_LIMITS:
        raw = headers.get(f"x-ratelimit-reset-{kind}")
        if raw is not None and (w := go_duration(raw)) is not None:
            found.append((w, _spent(headers.get(f"x-ratelimit-remaining-{kind}"))))
    for kind in _ANTHROPIC_LIMITS:
        raw = headers.get(f"anthropic-ratelimit-{kind}-reset")
        if raw is not None and (w := rfc3339_wait(raw, now)) is not None:
            found.append((w, _spent(headers.get(f"anthropic-ratelimit-{kind}-remaining"))))
    if not found:
        return None
    spent = [w for w, exhausted in found if exhausted]
    return _capped(max(spent) if spent else max(w for w, _ in found))


def wait_from(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before the next request to this upstream, or None when its
    headers do not say (first of retry-after-ms, retry-after, the reset headers)."""
    ms = headers.get("retry-after-ms")
    if ms is not None and len(ms) <= _MAX_VALUE_LEN and ms.isascii():
        try:
            wait = _finite(float(ms) / 1000)
        except ValueError:
            wait = None
        if wait is not None:
            return _capped(wait)
    ra = headers.get("retry-after")
    if ra is not None and (wait := _retry_after_value(ra, now)) is not None:
        return _capped(wait)
    return reset_wait(headers, now)


def hint_headers(wait: float) -> dict[str, str]:
    """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms`` for a wait."""
    wait = min(max(0.0, wait), MAX_WAIT)
    return {"retry-after": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}


def client_hints(headers: Mapping[str, str], now: float | None = None) -> dict[str, str]:
    """What a client gets with an upstream's 429: the wait as both retry headers (when
    the upstream said one in any form) and the upstream's ``x-should-retry``."""
    out: dict[str, str] = {}
    wait = wait_from(headers, now)
    if wait is not None:
        out.update(hint_headers(wait))
    should = headers.get("x-should-retry")
    if should is not None and should.strip().lower() in ("true", "false"):
        out["x-should-retry"] = should.strip().lower()
    return out


__all__ = [
    "MAX_WAIT",
    "client_hints",
    "go_duration",
    "hint_headers",
    "reset_wait",
    "rfc3339_wait",
    "wait_from",
]
