"""gzip for whole JSON answers, at the edge; streams are never compressed.

A JSON answer of at least ``GATEWAY_GZIP_MIN_BYTES`` (1 KiB) to a client whose
``Accept-Encoding`` allows gzip goes out gzip-compressed, whichever route made it
(pipeline replies and Litestar's handlers alike send a whole body in one message).
Level 1: on LLM JSON it compresses as well as level 6 (text repeats little within
one answer) at a fraction of the CPU, and an embeddings answer of floats costs
about a quarter of level 6's time for 5 % more bytes.

Server-sent event streams are passed through uncompressed, event by event. gzip
could be flushed after every event, but each flush ends a deflate block (a few
bytes and a CPU call per event, events being a few hundred bytes); the window
shared across events would compress well, yet proxies and clients in between
may hold compressed data until a block fills, which is latency the first token
cannot afford; and the events are small next to the time they take to generate.
Only gzip: Python has it built in, every HTTP client decodes it, and on JSON of
this size brotli or zstd would save little for an extra compiled dependency.

The edge wraps ``send`` with ``GzipSend`` only for requests that accept gzip; other
requests pay one scan of their headers.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar.types import Send

__all__ = ["GzipSend", "accepts_gzip"]

LEVEL = 1
_JSON = b"application/json"


def accepts_gzip(headers: list[tuple[bytes, bytes]]) -> bool:
    """Does ``Accept-Encoding`` allow gzip (RFC 9110 12.5.3: ``gzip``, ``x-gzip`` or
    ``*``, with a q-value above 0)?"""
    for k, v in headers:
        if k == b"accept-encoding":
            star = False
            for item in v.lower().split(b","):
                name, _, params = item.partition(b";")
                name = name.strip()
                if name in (b"gzip", b"x-gzip"):
                    return _q(params) > 0
                if name == b"*":
                    star = _q(params) > 0
            return star
    return False


def _q(params: bytes) -> float:
    for p in params.split(b";"):
        key, _, value = p.strip().partition(b"=")
        if key == b"q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


class GzipSend:
    """``send`` for a client that accepts gzip: a JSON answer's start is held until its
    body, which is compressed when it is whole and at least ``min_size`` bytes."""

    __slots__ = ("_held", "_min", "_send")

    def __init__(self, send: Send, min_size: int) -> None:
        self._send = send
        self._min = min_size
        self._held: Any = None  # the start message, until the body comes

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            if _is_json(message):
                self._held = message  # sent with the body, once its size is known
                return
            await self._send(message)
            return
        start = self._held
        if start is not None:
            self._held = None
            body: bytes = message.get("body", b"")
            if not message.get("more_body", False) and len(body) >= self._min:
                packer = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # 31: the gzip format
                body = packer.compress(body) + packer.flush()
                headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
                headers.append((b"content-encoding", b"gzip"))
                headers.append((b"content-length", str(len(body)).encode()))
                start["headers"] = headers
                message["body"] = body
            start["headers"] = [*start["headers"], (b"vary", b"accept-encoding")]
            await self._send(start)
        await self._send(message)


def _is_json(start: Any) -> bool:
    json = False
    for k, v in start["headers"]:
        if k == b"content-encoding":
            return False  # already encoded
        if k == b"content-type" and v.startswith(_JSON):
            json = True
    return json
