"""What the pipeline answers with, written straight to ASGI.

A ``Reply`` is a status, headers and either a whole body or an async iterator of
SSE frames. The endpoint handler sends it with ``send_reply``: no Litestar
``Response`` object, no per-request header merging. A stream is flushed frame
by frame (each event goes out as it is produced) and its iterator is always
closed, whether it ran to its end, failed, or the client went away: closing it
is what closes the upstream response and settles the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import Send

__all__ = ["JSON", "SSE", "Reply", "send_reply"]

JSON = b"application/json"
SSE = b"text/event-stream"
_STREAM_HEADERS = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))


@dataclass(eq=False, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    frames: AsyncIterator[bytes] | None = None  # a stream: SSE frames, flushed one by one
    media_type: bytes = JSON
    # A stream's own close (its relay's ``aclose``): runs however sending ends, even when
    # the frames never started (closing a generator that never ran runs none of its code).
    close: Callable[[], Awaitable[None]] | None = None
    # A stream's ``last()``: the frame just produced is its last, so it goes out as the
    # body's end. Each ASGI send costs Granian 8-30 µs of the worker's time whatever it
    # carries (bench/README.md): the empty closing message is one a stream can skip.
    last: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        if self.frames is not None:
            self.media_type = SSE


async def send_reply(reply: Reply, send: Send) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    raw.append((b"content-type", reply.media_type))
    frames = reply.frames
    if frames is None:
        raw.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        await send({"type": "http.response.body", "body": reply.body, "more_body": False})
        return
    raw.extend(_STREAM_HEADERS)
    try:
        async with aclosing(frames):  # type: ignore[type-var]
            await send({"type": "http.response.start", "status": reply.status, "headers": raw})
            last = reply.last
            ended = False
            async for frame in frames:
                if frame and not ended:
                    ended = last is not None and last()
                    await send(
                        {"type": "http.response.body", "body": frame, "more_body": not ended}
                    )
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        if reply.close is not None:
            await reply.close()
