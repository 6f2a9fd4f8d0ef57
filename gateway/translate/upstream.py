"""What every translator does with a provider's failures and streams.

Error statuses every provider maps the same way (401/403, 429, other 4xx, 5xx);
bodies and stream events that do not decode; ``SSEStream``, the feed loop of every
provider's stream translator, which delivers the frames before an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

import msgspec

from _speedups.sse import SSEDecoder
from gateway.errors import GatewayError, UpstreamStatus, UpstreamUnavailable
from gateway.translate.common import MAX_EVENT_BYTES

if TYPE_CHECKING:
    from gateway.wire.chat import Usage

T = TypeVar("T")


# -- error statuses -------------------------------------------------------------------


def auth_failed(provider: str, status: int) -> UpstreamStatus:
    """Upstream 401/403: the gateway's key was refused, not the client's (a 502)."""
    return UpstreamStatus(
        f"provider {provider} rejected the gateway's credentials (status {status})",
        provider=provider,
        upstream_status=status,
        code="upstream_auth_failed",
    )


def rate_limited(provider: str, message: str, headers: Mapping[str, str]) -> UpstreamStatus:
    """Upstream 429, with the retry headers worth passing on."""
    return UpstreamStatus(
        f"provider {provider} is rate limiting: {message}",
        provider=provider,
        upstream_status=429,
        status=429,
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=headers,
    )


def request_rejected(
    provider: str, status: int, message: str, type: str, code: str | None
) -> UpstreamStatus:
    """Another upstream 4xx: the request itself was refused; the client sees the status."""
    return UpstreamStatus(
        message,
        provider=provider,
        upstream_status=status,
        status=status,
        type=type,
        code=code,
    )


def upstream_failed(
    provider: str,
    status: int,
    message: str,
    headers: Mapping[str, str],
    *,
    type: str | None = None,
    code: str | None = None,
) -> UpstreamStatus:
    """Any other upstream status: a 504 stays a 504, the rest are 502."""
    return UpstreamStatus(
        f"provider {provider} failed with status {status}: {message}",
        provider=provider,
        upstream_status=status,
        status=504 if status == 504 else 502,
        type=type,
        code=code,
        headers=headers,
    )


# -- bodies and streams ---------------------------------------------------------------


def decode_body(
    decoder: msgspec.json.Decoder[T], content: bytes | str, provider: str, what: str
) -> T:
    """``content`` decoded, or a 502 saying ``provider <what>``."""
    try:
        return decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamUnavailable(f"provider {provider} {what}", provider=provider) from None


def decode_event(decoder: msgspec.json.Decoder[T], data: str, provider: str) -> T:
    """One SSE event's data decoded, or a 502 (the event is not valid JSON)."""
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise bad_event(provider) from None


def bad_event(provider: str) -> GatewayError:
    """The 502 for a stream event that is not valid JSON (for callers that decode inline:
    the hottest loop of a stream, once per event)."""
    return UpstreamUnavailable(
        f"provider {provider} sent a stream event that is not valid JSON", provider=provider
    )


class SSEStream:
    """The part of ``StreamTranslator`` every provider's stream shares: SSE in, frames
    out, and an in-stream error that never costs the frames before it.

    ``feed`` hands each whole event to ``_event(event type, data, frames)``, which
    appends the frames it makes or raises ``GatewayError`` to end the stream. The
    error is kept in ``error``: with frames before it in the same chunk, ``feed``
    returns them (the relay delivers them, then the error); with none, it raises at
    once. Either way every later call raises it. An event buffered past
    ``MAX_EVENT_BYTES`` is an error. Subclasses add their slots, ``_event`` and
    ``_end_of_body`` (what ``finish`` returns when no error came).
    """

    __slots__ = ("_provider", "_sse", "done", "error", "usage")

    def __init__(self, provider: str) -> None:
        self._sse = SSEDecoder()
        self._provider = provider
        self.error: GatewayError | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if self.error is not None:
            raise self.error
        frames: list[bytes] = []
        sse = self._sse
        try:
            for etype, data, _id in sse.feed(chunk):
                self._event(etype, data, frames)
            if sse.buffered > MAX_EVENT_BYTES:
                raise UpstreamUnavailable(
                    f"provider {self._provider} sent an oversized stream event",
                    provider=self._provider,
                )
        except GatewayError as err:
            self.error = err
            if not frames:
                raise
        return frames

    def finish(self) -> list[bytes]:
        if self.error is not None:
            raise self.error
        return self._end_of_body()

    def _event(self, etype: str, data: str, frames: list[bytes]) -> None:
        raise NotImplementedError

    def _end_of_body(self) -> list[bytes]:
        raise NotImplementedError


def ended_early(provider: str, before: str) -> UpstreamUnavailable:
    """The body ended before the event that closes a stream: it was cut short."""
    return UpstreamUnavailable(
        f"provider {provider} ended the stream before {before}", provider=provider
    )


__all__ = [
    "SSEStream",
    "auth_failed",
    "decode_body",
    "decode_event",
    "ended_early",
    "rate_limited",
    "request_rejected",
    "upstream_failed",
]
