"""What every translator does with a provider's failures and streams.

Error statuses every provider maps the same way (401/403, 429, other 4xx, 5xx);
bodies and stream events that do not decode; the SSE feed loop that delivers the
frames before an error and raises it on the next call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from gateway.errors import GatewayError, UpstreamStatus, UpstreamUnavailable
from gateway.translate.common import MAX_EVENT_BYTES

T = TypeVar("T")

# (event type, data, frames out) -> None; raises GatewayError to end the stream.
EventHandler = Callable[[str, str, list[bytes]], None]


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
    return decode_body(decoder, data, provider, "sent a stream event that is not valid JSON")


def feed_sse(
    sse: Any, chunk: bytes, provider: str, handle: EventHandler
) -> tuple[list[bytes], GatewayError | None]:
    """Feed ``chunk`` to ``sse`` and each whole event to ``handle``: (frames, deferred error).

    An error after some frames is returned, not raised, so the caller delivers
    those frames first and raises it on its next call; an error before any frame
    is raised. An event buffered past ``MAX_EVENT_BYTES`` is an error.
    """
    frames: list[bytes] = []
    try:
        for etype, data, _id in sse.feed(chunk):
            handle(etype, data, frames)
        if sse.buffered > MAX_EVENT_BYTES:
            raise UpstreamUnavailable(
                f"provider {provider} sent an oversized stream event", provider=provider
            )
    except GatewayError as err:
        if not frames:
            raise
        return frames, err
    return frames, None


def ended_early(provider: str, before: str) -> UpstreamUnavailable:
    """The body ended before the event that closes a stream: it was cut short."""
    return UpstreamUnavailable(
        f"provider {provider} ended the stream before {before}", provider=provider
    )


__all__ = [
    "EventHandler",
    "auth_failed",
    "decode_body",
    "decode_event",
    "ended_early",
    "feed_sse",
    "rate_limited",
    "request_rejected",
    "upstream_failed",
]
