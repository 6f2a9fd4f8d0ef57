"""The base of every stream translator that speaks another API on top of OpenAI chat.

``/v1/messages`` (``messages_stream.AnthropicEventStream``) and ``/v1/responses``
(``responses_stream.ResponsesEventStream``) reach providers through chat: the
deployment's own translator turns the provider's stream into OpenAI chunk
frames, and ``ChatFrames`` reads those frames back as an SSE client would and
hands each chunk to ``_chunk`` (by default, choice 0 to ``_choice``) and the
``[DONE]`` to ``_end``, which sets ``done``. Usage and errors are the inner
translator's; a body that ends before ``done`` was cut short.
"""

from __future__ import annotations

from typing import Any

import msgspec

from _speedups.sse import SSEDecoder
from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.providers.base import StreamTranslator
from gateway.wire.chat import Usage

__all__ = ["ChatFrames"]


class ChatFrames:
    """OpenAI chunk frames from an inner ``StreamTranslator`` in, another API's events out."""

    __slots__ = ("_frames", "_inner", "done")

    def __init__(self, inner: StreamTranslator) -> None:
        self._inner = inner
        self._frames = SSEDecoder()  # reads the inner frames as any SSE client would
        self.done = False

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    @property
    def error(self) -> GatewayError | None:
        return self._inner.error

    def feed(self, chunk: bytes) -> list[bytes]:
        return self._convert(self._inner.feed(chunk))

    def finish(self) -> list[bytes]:
        out = self._convert(self._inner.finish())
        if not self.done:
            raise UpstreamUnavailable("the stream ended before it was complete", provider="gateway")
        return out

    def _convert(self, frames: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        if not frames:
            return out
        for _etype, data, _id in self._frames.feed(b"".join(frames)):
            if self.done:
                break
            if data == "[DONE]":
                self._end(out)
                continue
            self._chunk(msgspec.json.decode(data), out)
        return out

    def _chunk(self, obj: Any, out: list[bytes]) -> None:
        """One chunk: choice 0 goes to ``_choice`` (the others are not used)."""
        for c in obj.get("choices") or () if isinstance(obj, dict) else ():
            if isinstance(c, dict) and c.get("index", 0) == 0:
                self._choice(c, out)

    def _choice(self, c: dict[str, Any], out: list[bytes]) -> None:
        raise NotImplementedError

    def _end(self, out: list[bytes]) -> None:
        """``[DONE]``: close what is open, send the last events, set ``done``."""
        raise NotImplementedError
