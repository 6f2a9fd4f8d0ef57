"""Helpers for the ``/v1/responses`` golden files (no tests in this module).

Layout under ``tests/data/responses/``:
- ``request_<case>.json``   {"provider", "responses": <request>, "history"?: [items],
                             "expect": <upstream body>} or {..., "error": {"status", "param",
                             "contains"}}: the request as the provider receives it
- ``response_<case>.json``  {"provider", "request", "upstream": <provider answer>,
                             "expect": <response object, created_at dropped>}
- ``stream_<case>.json``    {"provider", "request", "transcript": <path under tests/data>,
                             "passthrough"?: bool, "expect": {"events", "response"}} or
                             {..., "error": {...}, "expect_before": {"events"}}: the
                             provider's SSE transcript fed whole, split at every byte and
                             byte by byte, with the same result each time

Generated ids are deterministic (``counter_ids``) and ``created_at`` is pinned to 0.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.translate.common import counter_ids
from gateway.translate.responses_passthrough import ResponsesPassthroughStream
from gateway.translate.responses_response import skeleton
from gateway.translate.responses_stream import ResponsesEventStream
from tests.providers import golden as g

DATA = Path(__file__).resolve().parent.parent / "data"
CASES = DATA / "responses"
PROVIDERS = {  # provider -> (upstream model, base URL)
    "anthropic": ("claude-sonnet-4-5", "https://api.anthropic.com"),
    "gemini": ("gemini-2.5-flash", "https://generativelanguage.googleapis.com/v1beta"),
    "openai": ("gpt-4o", "https://api.openai.com/v1"),
    "mock": ("mock-1", "http://mock.invalid/v1"),
}


def cases(prefix: str) -> list[Path]:
    return sorted(CASES.glob(f"{prefix}_*.json"))


def dep(provider: str) -> Any:
    model, base = PROVIDERS[provider]
    return g.make_dep(provider, model, base)


def base(request: dict[str, Any]) -> dict[str, Any]:
    return skeleton(request, str(request.get("model")), counter_ids(), created=0)


def translator(case: dict[str, Any]) -> Any:
    d = dep(case["provider"])
    if case.get("passthrough"):
        return ResponsesPassthroughStream(case["provider"])
    inner = d.adapter.chat_stream(d, True)
    return ResponsesEventStream(inner, base(case["request"]), counter_ids())


_RANDOM_ID = re.compile(rb"call_[0-9a-f]{24}")  # made by a provider translator (Gemini)


def _stable_ids(raw: bytes) -> bytes:
    """Random call ids renamed by order of appearance, so runs compare equal."""
    seen: dict[bytes, bytes] = {}
    return _RANDOM_ID.sub(lambda m: seen.setdefault(m.group(), b"call_%d" % len(seen)), raw)


def summarize(frames: list[bytes]) -> dict[str, Any]:
    """The meaning of a Responses event stream, checking its invariants on the way."""
    events = g.sse_events(_stable_ids(b"".join(frames)))
    types = []
    numbers = []
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    text: dict[tuple[int, int], str] = {}
    args: dict[int, str] = {}
    final = None
    for etype, data in events:
        assert etype == data["type"], (etype, data)
        assert final is None, "events after the terminal event"
        types.append(etype)
        numbers.append(data["sequence_number"])
        if etype == "response.output_item.added":
            added[data["output_index"]] = data["item"]
        elif etype == "response.output_item.done":
            i = data["output_index"]
            assert added[i]["id"] == data["item"]["id"], "an item keeps its id"
            done[i] = data["item"]
        elif etype in ("response.output_text.delta", "response.refusal.delta"):
            assert data["item_id"] == added[data["output_index"]]["id"]
            key = (data["output_index"], data["content_index"])
            text[key] = text.get(key, "") + data["delta"]
        elif etype == "response.output_text.done":
            assert text.get((data["output_index"], data["content_index"]), "") == data["text"]
        elif etype == "response.function_call_arguments.delta":
            args[data["output_index"]] = args.get(data["output_index"], "") + data["delta"]
        elif etype == "response.function_call_arguments.done":
            assert args.get(data["output_index"], "") == data["arguments"]
        elif etype in ("response.completed", "response.incomplete", "response.failed"):
            final = dict(data["response"])
            final.pop("created_at", None)
    assert not numbers or numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    if final is not None and final["status"] != "failed":
        assert sorted(done) == list(range(len(final["output"]))), "every item finished"
        assert [done[i] for i in sorted(done)] == final["output"]
    return {"events": types, "response": final}


def run(case: dict[str, Any], pieces: list[bytes]) -> tuple[str, Any]:
    t = translator(case)
    try:
        frames = g.run_stream(t, pieces)
    except g.Raised as r:
        return "raised", (g.error_view(r.err), r.err.message, summarize(r.frames)["events"])
    assert t.done
    return "ok", summarize(frames)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def transcript(case: dict[str, Any]) -> bytes:
    return (DATA / case["transcript"]).read_bytes()


def error_of(fn: Any) -> GatewayError:
    try:
        fn()
    except GatewayError as err:
        return err
    raise AssertionError("no error")
