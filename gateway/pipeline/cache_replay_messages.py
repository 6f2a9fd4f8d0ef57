"""The response cache's stream assembly and replay for ``/v1/messages`` (Anthropic events).

``MessageAssembler`` turns a relayed Anthropic event stream into the equivalent
``message`` JSON (text with citations, ``tool_use`` with its whole input,
``thinking`` with its signature, any other block as it started, stop reason,
usage). It returns None unless the stream was whole and clean: ``message_stop``
seen, a stop reason, every delta understood.

``message_frames`` goes the other way: a stored ``message`` as the event stream
Anthropic would have sent for it (``message_start``, per block a start, its
deltas and a stop, ``message_delta`` with the stop reason and usage,
``message_stop``), so one stored format serves streaming and plain clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from _speedups.sse import SSEDecoder

if TYPE_CHECKING:
    from gateway.wire.chat import Usage

__all__ = ["MessageAssembler", "message_frames"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


class _Block:
    __slots__ = ("block", "json", "text_key")

    def __init__(self, block: dict[str, Any]) -> None:
        self.block = dict(block)
        self.json: str | None = "" if block.get("type") in ("tool_use", "server_tool_use") else None
        self.text_key = {"text": "text", "thinking": "thinking"}.get(str(block.get("type")))


class MessageAssembler:
    """Anthropic stream events (the relay's frames) in, the ``message`` JSON out."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, _Block] = {}
        self._stopped = False
        self.ok = True

    def feed(self, frame: bytes) -> None:
        if not self.ok:
            return
        for _etype, data, _id in self._sse.feed(frame):
            try:
                self._event(_decode(data))
            except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
                self.ok = False
                return

    def _event(self, ev: dict[str, Any]) -> None:
        kind = ev["type"]
        if kind == "message_start":
            self._message = dict(ev["message"])
        elif kind == "content_block_start":
            self._blocks[int(ev["index"])] = _Block(ev["content_block"])
        elif kind == "content_block_delta":
            self._delta(self._blocks[int(ev["index"])], ev["delta"])
        elif kind == "message_delta":
            assert self._message is not None
            self._message.update(ev.get("delta") or {})
            usage = dict(self._message.get("usage") or {})
            usage.update(ev.get("usage") or {})
            self._message["usage"] = usage
        elif kind == "message_stop":
            self._stopped = True
        elif kind in ("ping", "content_block_stop"):
            pass
        else:  # an error event, or one this version does not know: do not store
            self.ok = False

    def _delta(self, b: _Block, delta: dict[str, Any]) -> None:
        kind = delta["type"]
        if kind == "text_delta" and b.text_key == "text":
            b.block["text"] = b.block.get("text", "") + delta["text"]
        elif kind == "thinking_delta" and b.text_key == "thinking":
            b.block["thinking"] = b.block.get("thinking", "") + delta["thinking"]
        elif kind == "signature_delta":
            b.block["signature"] = b.block.get("signature", "") + delta["signature"]
        elif kind == "input_json_delta" and b.json is not None:
            b.json += delta["partial_json"]
        elif kind == "citations_delta":
            b.block["citations"] = [*(b.block.get("citations") or []), delta["citation"]]
        else:
            self.ok = False

    def result(self, usage: Usage | None = None) -> bytes | None:
        """The message JSON, or None if the stream was not a whole, clean answer."""
        msg = self._message
        if not self.ok or not self._stopped or msg is None or not msg.get("stop_reason"):
            return None
        content = []
        for index in sorted(self._blocks):
            b = self._blocks[index]
            if b.json is not None:
                try:
                    b.block["input"] = _decode(b.json) if b.json else {}
                except msgspec.DecodeError:
                    return None
            content.append(b.block)
        return _encode({**msg, "content": content})


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def message_frames(body: bytes) -> bytes:
    """A stored ``message`` as the event stream Anthropic would have sent for it."""
    msg = _decode(body)
    usage = dict(msg.get("usage") or {})
    start = {**msg, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": min(1, usage.get("output_tokens") or 0)}
    out = [_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(msg.get("content") or ()):
        kind = block.get("type")
        first = dict(block)
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            first["text"] = ""
            first.pop("citations", None)
            for citation in block.get("citations") or ():
                deltas.append({"type": "citations_delta", "citation": citation})
            if block.get("text"):
                deltas.append({"type": "text_delta", "text": block["text"]})
        elif kind == "thinking":
            first["thinking"], first["signature"] = "", ""
            if block.get("thinking"):
                deltas.append({"type": "thinking_delta", "thinking": block["thinking"]})
            if block.get("signature"):
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind in ("tool_use", "server_tool_use"):
            first["input"] = {}
            arguments = _encode(block.get("input") or {}).decode()
            deltas.append({"type": "input_json_delta", "partial_json": arguments})
        out.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
        )
        for delta in deltas:
            out.append(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": msg.get("stop_reason"), "stop_sequence": msg.get("stop_sequence")}
    out.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    out.append(_event("message_stop", {"type": "message_stop"}))
    return b"".join(out)
