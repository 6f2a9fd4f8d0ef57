"""Responses stream events: written with sequence numbers, read back, replayed, ended.

* ``Events`` writes one event (``event: <type>`` and its JSON on one ``data:``
  line) with the next ``sequence_number``.
* ``ResponsesAssembler`` reads the frames a client was sent (it observes a
  relayed stream): the last sequence number, the ``response`` of
  ``response.created``, the finished output items and the final ``response``
  (``response.completed`` or ``response.incomplete``). It is the cache's
  assembler, what the conversation state stores, and it ends a stream that
  broke after its first byte (``failure``) with the ``error`` event and a
  ``response.failed`` carrying the same response id and the items finished so
  far, numbered after the last event sent: never a ``response.completed``.
* ``response_frames`` replays a stored ``response`` as the event sequence a
  client streaming it would have received (cache hits, ``GET ?stream=true``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from _speedups.sse import SSEDecoder
from gateway.sse_write import event as sse_event
from gateway.translate.common import encode
from gateway.translate.responses_response import refusal_part, skeleton, text_part
from gateway.wire.responses import EventView

if TYPE_CHECKING:
    from gateway.errors import GatewayError
    from gateway.wire.chat import Usage

__all__ = ["TERMINAL", "Events", "ResponsesAssembler", "failure_frames", "response_frames"]

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_decode = msgspec.json.decode
_event_decoder = msgspec.json.Decoder(EventView)


class Events:
    """Writes Responses events, numbering them from ``seq``."""

    __slots__ = ("seq",)

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq

    def __call__(self, kind: str, **fields: Any) -> bytes:
        fields["type"] = kind
        fields["sequence_number"] = self.seq
        self.seq += 1
        return sse_event(encode(fields), kind.encode())


def failure_frames(
    err: GatewayError, base: dict[str, Any] | None, items: list[Any], seq: int
) -> bytes:
    """The end of a stream that broke: ``error``, then ``response.failed`` (after a
    ``response.created`` when the client got nothing yet), numbered after ``seq``."""
    ev = Events(seq + 1)
    out = []
    if base is None:
        base = skeleton({}, "")
        out.append(ev("response.created", response=base))
    out.append(ev("error", code=err.code, message=err.message, param=err.param))
    failed = dict(base)
    failed.update(
        status="failed",
        error={
            "code": "rate_limit_exceeded" if err.status == 429 else "server_error",
            "message": err.message,
        },
        output=items,
        usage=None,
    )
    out.append(ev("response.failed", response=failed))
    return b"".join(out)


class ResponsesAssembler:
    """Responses frames as a client read them: see the module docstring."""

    __slots__ = ("_base", "_items", "_sse", "final", "ok", "seq")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.seq = -1
        self._base: msgspec.Raw | None = None
        self._items: dict[int, msgspec.Raw] = {}
        self.final: bytes | None = None  # the response of a completed or incomplete stream
        self.ok = True  # every event understood

    def feed(self, frame: bytes) -> None:
        for _etype, data, _id in self._sse.feed(frame):
            try:
                view = _event_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.ok = False
                continue
            if view.sequence_number is not None and view.sequence_number > self.seq:
                self.seq = view.sequence_number
            kind = view.type
            if kind == "response.created":
                self._base = view.response
            elif kind == "response.output_item.done" and view.output_index is not None:
                self._items[view.output_index] = view.item
            elif kind in ("response.completed", "response.incomplete") and len(view.response):
                self.final = bytes(view.response)

    def result(self, usage: Usage | None = None) -> bytes | None:
        """The final response, for the cache (None unless the stream ended properly)."""
        return self.final if self.ok else None

    def failure(self, err: GatewayError) -> bytes:
        base = _decode(self._base) if self._base is not None and len(self._base) else None
        if not isinstance(base, dict):
            base = None
        items = [_decode(self._items[k]) for k in sorted(self._items)]
        return failure_frames(err, base, items, self.seq)


# -- replay -------------------------------------------------------------------------------


def _message(ev: Events, index: int, item: dict[str, Any]) -> list[bytes]:
    item_id = item.get("id")
    ids = {"item_id": item_id, "output_index": index}
    out = [ev("response.output_item.added", output_index=index, item={**item, "content": []})]
    for k, part in enumerate(item.get("content") or ()):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "output_text":
            text = str(part.get("text") or "")
            out.append(
                ev("response.content_part.added", **ids, content_index=k, part=text_part(""))
            )
            if text:
                out.append(
                    ev(
                        "response.output_text.delta",
                        **ids,
                        content_index=k,
                        delta=text,
                        logprobs=[],
                    )
                )
            out.append(
                ev("response.output_text.done", **ids, content_index=k, text=text, logprobs=[])
            )
        elif kind == "refusal":
            text = str(part.get("refusal") or "")
            out.append(
                ev("response.content_part.added", **ids, content_index=k, part=refusal_part(""))
            )
            out.append(ev("response.refusal.delta", **ids, content_index=k, delta=text))
            out.append(ev("response.refusal.done", **ids, content_index=k, refusal=text))
        else:
            out.append(ev("response.content_part.added", **ids, content_index=k, part=part))
        out.append(ev("response.content_part.done", **ids, content_index=k, part=part))
    return out


def _reasoning(ev: Events, index: int, item: dict[str, Any]) -> list[bytes]:
    ids = {"item_id": item.get("id"), "output_index": index}
    out = [ev("response.output_item.added", output_index=index, item={**item, "summary": []})]
    for k, part in enumerate(item.get("summary") or ()):
        text = str(part.get("text") or "") if isinstance(part, dict) else ""
        empty = {"type": "summary_text", "text": ""}
        out.append(ev("response.reasoning_summary_part.added", **ids, summary_index=k, part=empty))
        out.append(ev("response.reasoning_summary_text.delta", **ids, summary_index=k, delta=text))
        out.append(ev("response.reasoning_summary_text.done", **ids, summary_index=k, text=text))
        done = {"type": "summary_text", "text": text}
        out.append(ev("response.reasoning_summary_part.done", **ids, summary_index=k, part=done))
    return out


def _function_call(ev: Events, index: int, item: dict[str, Any]) -> list[bytes]:
    ids = {"item_id": item.get("id"), "output_index": index}
    args = str(item.get("arguments") or "")
    added = {**item, "arguments": "", "status": "in_progress"}
    out = [ev("response.output_item.added", output_index=index, item=added)]
    if args:
        out.append(ev("response.function_call_arguments.delta", **ids, delta=args))
    out.append(ev("response.function_call_arguments.done", **ids, arguments=args))
    return out


_ITEM_EVENTS: dict[str, Callable[[Events, int, dict[str, Any]], list[bytes]]] = {
    "message": _message,
    "reasoning": _reasoning,
    "function_call": _function_call,
}


def response_frames(body: bytes) -> bytes:
    """A stored ``response`` as the event sequence its stream would have been."""
    response = _decode(body)
    ev = Events()
    start = {**response, "status": "in_progress", "output": [], "usage": None}
    start["incomplete_details"] = start["error"] = None
    out = [ev("response.created", response=start), ev("response.in_progress", response=start)]
    for index, item in enumerate(response.get("output") or ()):
        kind = item.get("type") if isinstance(item, dict) else None
        make = _ITEM_EVENTS.get(str(kind))
        if make is None:  # a hosted tool's item: announced whole
            out.append(ev("response.output_item.added", output_index=index, item=item))
        else:
            out.extend(make(ev, index, item))
        out.append(ev("response.output_item.done", output_index=index, item=item))
    status = response.get("status")
    kind = f"response.{status}" if f"response.{status}" in TERMINAL else "response.completed"
    out.append(ev(kind, response=response))
    return b"".join(out)
