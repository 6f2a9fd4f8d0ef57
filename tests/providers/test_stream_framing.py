"""What every stream path writes is valid SSE, and an in-stream error costs no content.

Issue 9, item 1: an upstream may spread one event's data over several ``data:``
lines (legal SSE; a client joins them with a line feed), with CRLF, CR or LF line
ends. Every provider's stream path is fed such streams at every byte split
(``golden.splits``), and what it writes must read back, strictly (``golden.sse_events``),
as the events the one-line transcript gives.

Item 3: when one network chunk holds content events and then an error event, every
translator returns the content and keeps the error (``StreamTranslator.error``) for
the relay to send after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import sse_write
from gateway.errors import GatewayError
from gateway.providers.anthropic import PassthroughStream
from gateway.providers.azure import AzureStream
from gateway.providers.base import StreamTranslator
from gateway.providers.openai import OpenAIStream
from gateway.translate import messages_stream as ms
from gateway.translate.anthropic import AnthropicStream
from gateway.translate.common import counter_ids
from gateway.translate.gemini_response import GeminiStream
from tests.providers import golden as g
from tests.providers.test_messages import STREAM_SOURCES
from tests.speedups.test_sse import reference

Source = tuple[Path, Callable[[], StreamTranslator]]


def _messages(inner: Callable[[], StreamTranslator]) -> Callable[[], StreamTranslator]:
    """The same stream behind ``/v1/messages`` (a deployment that is not Anthropic)."""
    return lambda: ms.AnthropicEventStream(inner(), "alias", "p", make_id=counter_ids())


def _behind_messages(name: str) -> Source:
    transcript, inner = STREAM_SOURCES[name]
    return transcript, _messages(inner)


# One transcript per stream path: chat completions per provider, then /v1/messages
# (Anthropic relayed as it is; the others translated to Anthropic events).
PATHS: dict[str, Source] = {
    "openai": STREAM_SOURCES["openai_text"],
    "azure": STREAM_SOURCES["azure_filter"],
    "anthropic": STREAM_SOURCES["anthropic_tools"],
    "gemini": STREAM_SOURCES["gemini_tools"],
    "messages-anthropic": (g.DATA / "anthropic" / "stream_tools.sse", PassthroughStream),
    "messages-openai": _behind_messages("openai_text"),
    "messages-azure": _behind_messages("azure_filter"),
    "messages-gemini": _behind_messages("gemini_tools"),
}
LINE_ENDS = {"crlf": b"\r\n", "cr": b"\r", "lf": b"\n"}


# -- the writer -----------------------------------------------------------------------------


@given(
    data=st.lists(st.sampled_from(["a", "é", " ", ":", "\r", "\n", "\r\n", "data: x"])).map(
        "".join
    ),
    name=st.sampled_from(["", "error", "a\nb", "x\r\ndata: y"]),
)
def test_event_reads_back_as_its_data_whatever_its_line_breaks(data: str, name: str) -> None:
    out = sse_write.event(data.encode(), name.encode())
    for line in out.split(b"\n")[:-2]:
        assert line.startswith((b"data: ", b"event: ")) and b"\r" not in line
    (got,), _, _, _ = reference(out)
    want = data.replace("\r\n", "\n").replace("\r", "\n")
    assert got == ((name.replace("\r", "").replace("\n", "") or "message"), want, "")


def test_json_line_keeps_the_json() -> None:
    text = '{\n  "a": "x\\ny",\r\n  "b": [1,\r2]\n}'
    assert "\n" not in sse_write.json_line(text) and "\r" not in sse_write.json_line(text)
    assert json.loads(sse_write.json_line(text)) == json.loads(text)
    assert (
        sse_write.json_event(text, "e") == b'event: e\ndata: {   "a": "x\\ny",    "b": [1, 2] }\n\n'
    )


# -- every stream path ----------------------------------------------------------------------


def multiline(raw: bytes, eol: bytes) -> bytes:
    """``raw``'s events again, each JSON data pretty-printed over several ``data:`` lines
    (two JSON lines to a ``data:`` line, alternately ``data: `` and ``data:``)."""
    events, _, _, _ = reference(raw)
    out = []
    for etype, data, _id in events:
        lines = [] if etype == "message" else [b"event: " + etype.encode()]
        if data == "[DONE]":
            lines.append(b"data: [DONE]")
        else:
            text = json.dumps(json.loads(data), indent=0, ensure_ascii=False).split("\n")
            groups = ["".join(text[i : i + 2]) for i in range(0, len(text), 2)]
            for k, group in enumerate(groups):
                lines.append((b"data: " if k % 2 == 0 else b"data:") + group.encode())
        out.append(eol.join(lines) + eol + eol)
    return b"".join(out)


def written(make: Callable[[], StreamTranslator], pieces: list[bytes]) -> bytes:
    t = make()
    out = b"".join(g.run_stream(t, pieces))
    assert t.done
    return out


def test_the_transform_keeps_each_events_meaning() -> None:
    raw = PATHS["messages-anthropic"][0].read_bytes()
    for eol in LINE_ENDS.values():
        spread = multiline(raw, eol)
        assert spread.count(b"data:") > 2 * raw.count(b"data:")
        got = [(t, json.loads(d)) for t, d, _ in reference(spread)[0]]
        assert got == [(t, json.loads(d)) for t, d, _ in reference(raw)[0]]


@pytest.mark.parametrize("eol", list(LINE_ENDS))
@pytest.mark.parametrize("path", list(PATHS))
def test_multiline_data_is_written_as_valid_sse_at_every_split(path: str, eol: str) -> None:
    transcript, make = PATHS[path]
    raw = transcript.read_bytes()
    want = g.sse_events(written(make, [raw]))  # the one-line transcript
    spread = multiline(raw, LINE_ENDS[eol])
    whole = written(make, [spread])
    assert g.sse_events(whole) == want
    # one data line to an event: a JSON text on one line, as clients and the gateway's
    # own frame readers expect
    for block in whole.split(b"\n\n")[:-1]:
        assert sum(line.startswith(b"data: ") for line in block.split(b"\n")) == 1
    for pieces in g.splits(spread):
        got = written(make, pieces)
        if got != whole:
            pytest.fail(f"split into {[len(p) for p in pieces][:3]}...: {got!r} != {whole!r}")


# -- content, then an error, in one chunk ---------------------------------------------------

OPENAI_ERROR = g.DATA / "azure" / "stream_error.sse"  # OpenAI's format
GEMINI_ERROR = g.DATA / "gemini" / "stream_error.sse"
ANTHROPIC_ERROR = g.DATA / "anthropic" / "stream_overloaded.sse"
ERROR_PATHS: dict[str, tuple[Path, Callable[[], StreamTranslator], bytes]] = {
    "openai": (OPENAI_ERROR, lambda: OpenAIStream("openai", True), b'"par"'),
    "azure": (OPENAI_ERROR, lambda: AzureStream(True), b'"par"'),
    "anthropic": (ANTHROPIC_ERROR, lambda: AnthropicStream(True), b'"Partial"'),
    "gemini": (GEMINI_ERROR, lambda: GeminiStream("g", True), b'"Partial"'),
    "messages-anthropic": (ANTHROPIC_ERROR, PassthroughStream, b'"Partial"'),
    "messages-openai": (
        OPENAI_ERROR,
        _messages(lambda: OpenAIStream("openai", True)),
        b'"par"',
    ),
    "messages-azure": (OPENAI_ERROR, _messages(lambda: AzureStream(True)), b'"par"'),
    "messages-gemini": (GEMINI_ERROR, _messages(lambda: GeminiStream("g", True)), b'"Partial"'),
}


@pytest.mark.parametrize("path", list(ERROR_PATHS))
def test_content_before_an_error_in_the_same_chunk_is_returned(path: str) -> None:
    transcript, make, content = ERROR_PATHS[path]
    t = make()
    frames = t.feed(transcript.read_bytes())
    assert content in b"".join(frames)  # the content events before the error
    g.sse_events(b"".join(frames))
    err = t.error
    assert isinstance(err, GatewayError)
    with pytest.raises(GatewayError) as again:
        t.feed(b"data: {}\n\n")
    assert again.value is err
    with pytest.raises(GatewayError) as at_end:
        t.finish()
    assert at_end.value is err


@pytest.mark.parametrize("path", list(ERROR_PATHS))
def test_an_error_with_nothing_before_it_raises_at_once(path: str) -> None:
    transcript, make, _ = ERROR_PATHS[path]
    events, _, _, _ = reference(transcript.read_bytes())
    etype, data, _ = next(e for e in events if '"error"' in e[1])
    error_only = f"event: {etype}\ndata: {data}\n\n".encode()
    t = make()
    with pytest.raises(GatewayError) as info:
        t.feed(error_only)
    assert t.error is info.value
