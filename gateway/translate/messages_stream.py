"""Any provider's OpenAI chunks as Anthropic Messages stream events (``/v1/messages``).

The stream side of ``messages.py``: the deployment's own translator produces OpenAI
chunk frames; ``AnthropicEventStream`` turns them into the event sequence an
Anthropic client expects.
"""

from __future__ import annotations

from typing import Any

from gateway.providers.base import StreamTranslator
from gateway.sse_write import event as sse_event
from gateway.translate.chat_frames import ChatFrames
from gateway.translate.common import IdFactory, encode, new_id
from gateway.translate.messages import STOP_REASONS, anthropic_usage

__all__ = ["AnthropicEventStream", "event"]


def event(kind: str, data: dict[str, Any]) -> bytes:
    return sse_event(encode(data), kind.encode())


class AnthropicEventStream(ChatFrames):
    """OpenAI chunk frames from any adapter's translator in, Anthropic events out.

    ``message_start`` goes out with the first frame; text deltas open a text
    block, each new tool call closes the open block and opens a ``tool_use``
    block whose argument fragments become ``input_json_delta``; ``[DONE]``
    closes the open block and sends ``message_delta`` (stop reason, usage) and
    ``message_stop``. Only choice 0 is used. Errors are the inner translator's.
    """

    __slots__ = (
        "_finish",
        "_id",
        "_model",
        "_next",
        "_open",
        "_provider",
        "_started",
        "_tools",
    )

    def __init__(
        self, inner: StreamTranslator, model: str, provider: str, make_id: IdFactory = new_id
    ) -> None:
        super().__init__(inner)
        self._model = model
        self._provider = provider
        self._id = make_id("msg_")
        self._started = False
        self._open: tuple[str, int] | None = None  # ("text" | "tool", block index)
        self._next = 0
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self._finish: str | None = None

    def _start(self, out: list[bytes]) -> None:
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Counts are final only at the end (message_delta carries them all); what
            # is known this early depends on how the bytes were chunked, so send none.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(event("message_start", {"type": "message_start", "message": message}))

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            index = self._open[1]
            out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
            self._open = None

    def _begin(self, kind: str, block: dict[str, Any], out: list[bytes]) -> int:
        self._close(out)
        index = self._next
        self._next += 1
        self._open = (kind, index)
        out.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        return index

    def _delta(self, index: int, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(
            event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        )

    def _chunk(self, obj: Any, out: list[bytes]) -> None:
        if not self._started:
            self._start(out)
        super()._chunk(obj, out)

    def _choice(self, c: dict[str, Any], out: list[bytes]) -> None:
        d = c.get("delta") or {}
        text = d.get("content")
        if text:
            if self._open is None or self._open[0] != "text":
                self._begin("text", {"type": "text", "text": ""}, out)
            assert self._open is not None
            self._delta(self._open[1], {"type": "text_delta", "text": text}, out)
        for call in d.get("tool_calls") or ():
            k = call.get("index", 0)
            fn = call.get("function") or {}
            if k not in self._tools:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call.get("id") or "",
                    "name": fn.get("name") or "",
                    "input": {},
                }
                self._tools[k] = self._begin("tool", block, out)
            args = fn.get("arguments")
            if args:
                # A fragment for an earlier call (interleaved parallel calls) still
                # names its own block, so an SDK assembles each call correctly.
                delta = {"type": "input_json_delta", "partial_json": args}
                self._delta(self._tools[k], delta, out)
        if c.get("finish_reason"):
            self._finish = c["finish_reason"]

    def _end(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(out)
        self._close(out)
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS.get(self._finish or "", "end_turn"),
                "stop_sequence": None,
            },
            "usage": anthropic_usage(self._inner.usage),
        }
        out.append(event("message_delta", delta))
        out.append(event("message_stop", {"type": "message_stop"}))
        self.done = True
