"""Any provider's OpenAI chunks as Responses stream events (``/v1/responses``).

The stream side of ``responses_response.py``: the deployment's own translator
produces OpenAI chunk frames; ``ResponsesEventStream`` turns them into the event
sequence a Responses client expects, numbered from 0:

    response.created, response.in_progress            with the first content
    reasoning (``reasoning_content`` deltas): output_item.added, reasoning_summary_part.added,
        reasoning_summary_text.delta..., then .done, part .done, output_item.done
    text: output_item.added (message), content_part.added, output_text.delta...,
        output_text.done, content_part.done, output_item.done (refusals likewise,
        as a ``refusal`` part with response.refusal.delta/.done)
    each tool call: output_item.added (function_call), function_call_arguments.delta...;
        its .done and output_item.done at the end (parallel calls may interleave)
    response.completed, or response.incomplete (length, content filter)

Nothing is sent before the first content, so the relay's commit point (the first
content event) is the first frame: a stream that dies in its preamble is retried.
Only choice 0 is used. Errors are the inner translator's; a broken stream is
ended by the endpoint's error shape (``responses_events.ResponsesAssembler``).
"""

from __future__ import annotations

from typing import Any

from gateway.providers.base import StreamTranslator
from gateway.translate.chat_frames import ChatFrames
from gateway.translate.common import IdFactory, new_id
from gateway.translate.responses_events import Events
from gateway.translate.responses_response import (
    finish_status,
    function_call_item,
    message_item,
    reasoning_item,
    refusal_part,
    response_usage,
    text_part,
)

__all__ = ["ResponsesEventStream"]


class ResponsesEventStream(ChatFrames):
    """OpenAI chunk frames from any adapter's translator in, Responses events out."""

    __slots__ = (
        "_base",
        "_calls",
        "_ev",
        "_finish",
        "_items",
        "_make_id",
        "_msg",
        "_rs",
        "_started",
    )

    def __init__(
        self, inner: StreamTranslator, base: dict[str, Any], make_id: IdFactory = new_id
    ) -> None:
        super().__init__(inner)
        self._base = base  # the response skeleton (responses_response.skeleton)
        self._ev = Events()
        self._make_id = make_id
        self._started = False
        self._items: list[dict[str, Any]] = []  # output items, by output index
        self._msg: int | None = None  # output index of the open message item
        self._rs: int | None = None  # output index of the open reasoning item
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index
        self._finish: str | None = None

    def _choice(self, c: dict[str, Any], out: list[bytes]) -> None:
        d = c.get("delta") or {}
        reasoning = d.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            self._reasoning(reasoning, out)
        text = d.get("content")
        if isinstance(text, str) and text:
            self._delta("output_text", text, out)
        refusal = d.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._delta("refusal", refusal, out)
        for call in d.get("tool_calls") or ():
            if isinstance(call, dict):
                self._call(call, out)
        if c.get("finish_reason"):
            self._finish = c["finish_reason"]

    # -- lifecycle --------------------------------------------------------------------

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            out.append(self._ev("response.created", response=self._base))
            out.append(self._ev("response.in_progress", response=self._base))

    def _add(self, item: dict[str, Any], out: list[bytes]) -> int:
        self._start(out)
        index = len(self._items)
        self._items.append(item)
        out.append(self._ev("response.output_item.added", output_index=index, item=item))
        return index

    def _item_done(self, index: int, out: list[bytes]) -> None:
        item = self._items[index]
        item["status"] = "completed"
        out.append(self._ev("response.output_item.done", output_index=index, item=item))

    # -- reasoning ------------------------------------------------------------------

    def _reasoning(self, delta: str, out: list[bytes]) -> None:
        if self._rs is None:
            self._close_message(out)
            item = reasoning_item(self._make_id("rs_"), "")
            self._rs = index = self._add(item, out)
            part = {"type": "summary_text", "text": ""}
            item["summary"].append(part)
            ids = {"item_id": item["id"], "output_index": index}
            out.append(
                self._ev("response.reasoning_summary_part.added", **ids, summary_index=0, part=part)
            )
        index = self._rs
        item = self._items[index]
        item["summary"][0]["text"] += delta
        ids = {"item_id": item["id"], "output_index": index}
        out.append(
            self._ev("response.reasoning_summary_text.delta", **ids, summary_index=0, delta=delta)
        )

    def _close_reasoning(self, out: list[bytes]) -> None:
        index = self._rs
        if index is None:
            return
        self._rs = None
        item = self._items[index]
        part = item["summary"][0]
        ids = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        out.append(self._ev("response.reasoning_summary_text.done", **ids, text=part["text"]))
        out.append(self._ev("response.reasoning_summary_part.done", **ids, part=part))
        out.append(self._ev("response.output_item.done", output_index=index, item=item))

    # -- message text and refusals ----------------------------------------------------

    def _delta(self, kind: str, delta: str, out: list[bytes]) -> None:
        self._close_reasoning(out)
        if self._msg is None:
            self._msg = self._add(message_item(self._make_id("msg_"), [], "in_progress"), out)
        index = self._msg
        item = self._items[index]
        parts: list[dict[str, Any]] = item["content"]
        if not parts or parts[-1]["type"] != kind:
            if parts:
                self._close_part(index, out)
            part = text_part("") if kind == "output_text" else refusal_part("")
            parts.append(part)
            out.append(
                self._ev(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=len(parts) - 1,
                    part=part,
                )
            )
        k = len(parts) - 1
        ids = {"item_id": item["id"], "output_index": index, "content_index": k}
        if kind == "output_text":
            parts[k]["text"] += delta
            out.append(self._ev("response.output_text.delta", **ids, delta=delta, logprobs=[]))
        else:
            parts[k]["refusal"] += delta
            out.append(self._ev("response.refusal.delta", **ids, delta=delta))

    def _close_part(self, index: int, out: list[bytes]) -> None:
        item = self._items[index]
        k = len(item["content"]) - 1
        part = item["content"][k]
        ids = {"item_id": item["id"], "output_index": index, "content_index": k}
        if part["type"] == "output_text":
            out.append(self._ev("response.output_text.done", **ids, text=part["text"], logprobs=[]))
        else:
            out.append(self._ev("response.refusal.done", **ids, refusal=part["refusal"]))
        out.append(self._ev("response.content_part.done", **ids, part=part))

    def _close_message(self, out: list[bytes]) -> None:
        index = self._msg
        if index is None:
            return
        self._msg = None
        self._close_part(index, out)
        self._item_done(index, out)

    # -- tool calls ---------------------------------------------------------------------

    def _call(self, call: dict[str, Any], out: list[bytes]) -> None:
        k = call.get("index", 0)
        fn = call.get("function") or {}
        index = self._calls.get(k)
        if index is None:
            self._close_reasoning(out)
            self._close_message(out)
            item = function_call_item(
                self._make_id("fc_"),
                call.get("id") or self._make_id("call_"),
                str(fn.get("name") or ""),
                "",
                "in_progress",
            )
            index = self._calls[k] = self._add(item, out)
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item = self._items[index]
            item["arguments"] += args
            out.append(
                self._ev(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=args,
                )
            )

    # -- the end --------------------------------------------------------------------

    def _end(self, out: list[bytes]) -> None:
        self._start(out)
        self._close_reasoning(out)
        self._close_message(out)
        for index in sorted(self._calls.values()):
            item = self._items[index]
            out.append(
                self._ev(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
            self._item_done(index, out)
        status, incomplete = finish_status(self._finish)
        final = dict(self._base)
        final.update(
            status=status,
            incomplete_details=incomplete,
            output=self._items,
            usage=response_usage(self._inner.usage),
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._ev(kind, response=final))
        self.done = True
