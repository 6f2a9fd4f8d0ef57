"""SSE decoder: WHATWG event-stream rules, chunking invariance, twin agreement."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.speedups.conftest import SELECTED, needs_c, variant

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "sse"
BOM = b"\xef\xbb\xbf"
U64_MAX = 2**64 - 1

Result = tuple[list[tuple[str, str, str]], str, int | None, int]


def run(mod: ModuleType, chunks: list[bytes]) -> Result:
    """Feed the chunks in order; return (events, last_event_id, retry, buffered)."""
    d = mod.SSEDecoder()
    events: list[tuple[str, str, str]] = []
    for c in chunks:
        events.extend(d.feed(c))
    return events, d.last_event_id, d.retry, d.buffered


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def reference(stream: bytes) -> Result:
    """Spec transcription on text: decode the whole stream at once, then parse lines."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split("\r\n|\r|\n", text)
    lines.pop()  # the unterminated remainder is never processed
    raw = stream[3:] if stream.startswith(BOM) else stream
    buffered = len(re.split(b"\r\n|\r|\n", raw)[-1])
    events: list[tuple[str, str, str]] = []
    data = etype = id_buf = last_id = ""
    retry: int | None = None
    for line in lines:
        if line == "":
            last_id = id_buf
            if data == "":
                etype = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append((etype or "message", data, last_id))
            data = etype = ""
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                etype = value
            elif field == "data":
                data += value + "\n"
            elif field == "id":
                if "\0" not in value:
                    id_buf = value
            elif field == "retry" and value and all(c in "0123456789" for c in value):
                digits = value.lstrip("0") or "0"
                if len(digits) <= 20 and int(digits) <= U64_MAX:
                    retry = int(digits)
    return events, last_id, retry, buffered


# ---------------------------------------------------------------------------
# Table of rule cases: (id, chunks, events, last_event_id, retry)

M = "message"
CASES: list[tuple[str, list[bytes], list[tuple[str, str, str]], str, int | None]] = [
    ("simple", [b"data: hello\n\n"], [(M, "hello", "")], "", None),
    ("lf_cr_crlf_mixed", [b"data: a\r\ndata: b\rdata: c\n\r\n"], [(M, "a\nb\nc", "")], "", None),
    (
        "cr_only_stream",
        [b"event: e\rdata: x\r\rdata: y\r\r"],
        [("e", "x", ""), (M, "y", "")],
        "",
        None,
    ),
    (
        "crlf_split_across_chunks",
        [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"],
        [(M, "a\nb", "")],
        "",
        None,
    ),
    ("cr_then_cr_across_chunks", [b"data: a\r", b"\r"], [(M, "a", "")], "", None),
    ("cr_then_text_across_chunks", [b"data: a\r", b"data: b\n\n"], [(M, "a\nb", "")], "", None),
    ("crlf_then_empty_chunk", [b"data: a\r", b"", b"\n", b"\r\n"], [(M, "a", "")], "", None),
    ("lf_cr_is_two_line_ends", [b"data: a\n\r"], [(M, "a", "")], "", None),
    ("bom_at_start", [BOM + b"data: x\n\n"], [(M, "x", "")], "", None),
    ("bom_split", [b"\xef", b"\xbb", b"\xbfdata: x\n\n"], [(M, "x", "")], "", None),
    ("bom_alone_then_data", [BOM, b"data: x\n\n"], [(M, "x", "")], "", None),
    ("bom_prefix_only_is_data", [b"\xef\xbb", b"data: x\n\ndata: y\n\n"], [(M, "y", "")], "", None),
    ("bom_not_at_start", [b"data: a\n\n" + BOM + b"data: b\n\n"], [(M, "a", "")], "", None),
    ("bom_twice_second_is_data", [BOM + BOM + b"data: x\n\ndata: y\n\n"], [(M, "y", "")], "", None),
    ("bom_in_value_kept", [b"data: " + BOM + b"x\n\n"], [(M, "\ufeffx", "")], "", None),
    (
        "split_multibyte_utf8",
        [b"data: caf\xc3", b"\xa9 \xe2\x82", b"\xac \xf0\x9f\x98", b"\x80\n\n"],
        [(M, "caf\u00e9 \u20ac \U0001f600", "")],
        "",
        None,
    ),
    ("invalid_utf8", [b"data: a\xffb\xc3(\n\n"], [(M, "a\ufffdb\ufffd(", "")], "", None),
    (
        "truncated_multibyte_at_line_end",
        [b"data: \xe2\x82\ndata: x\n\n"],
        [(M, "\ufffd\nx", "")],
        "",
        None,
    ),
    ("invalid_utf8_in_event_type", [b"event: \xfe\ndata: x\n\n"], [("\ufffd", "x", "")], "", None),
    (
        "id_with_nul_ignored",
        [b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"],
        [(M, "a", "1"), (M, "b", "1")],
        "1",
        None,
    ),
    (
        "last_event_id_persists",
        [b"id: 5\ndata: a\n\ndata: b\n\n"],
        [(M, "a", "5"), (M, "b", "5")],
        "5",
        None,
    ),
    (
        "empty_id_resets",
        [b"id: 5\ndata: a\n\nid\ndata: b\n\n"],
        [(M, "a", "5"), (M, "b", "")],
        "",
        None,
    ),
    ("id_only_block_sets_last_event_id", [b"id: 3\n\n"], [], "3", None),
    ("id_pending_until_blank_line", [b"id: 9\ndata: x\n"], [], "", None),
    (
        "id_utf8",
        [b"id: \xc3\xa9\xff\ndata: x\n\n"],
        [(M, "x", "\u00e9\ufffd")],
        "\u00e9\ufffd",
        None,
    ),
    ("retry_valid", [b"retry: 3000\n\n"], [], "", 3000),
    (
        "retry_invalid_ignored",
        [b"retry: 100\nretry: 12a\nretry:\nretry: -5\nretry:  7\nretry: 1.5\nretry\n"],
        [],
        "",
        100,
    ),
    ("retry_zero", [b"retry: 5\nretry: 0\n"], [], "", 0),
    ("retry_leading_zeros", [b"retry: 000000000000000000000000042\n"], [], "", 42),
    ("retry_u64_max", [b"retry: 18446744073709551615\n"], [], "", U64_MAX),
    ("retry_overflow_ignored", [b"retry: 7\nretry: 18446744073709551616\n"], [], "", 7),
    ("retry_unicode_digit_ignored", ["retry: 1\nretry: \u0661\n".encode()], [], "", 1),
    ("field_without_colon", [b"data\n\n"], [(M, "", "")], "", None),
    ("data_lines_without_colon", [b"data\ndata\n\n"], [(M, "\n", "")], "", None),
    ("data_no_space", [b"data:x\n\n"], [(M, "x", "")], "", None),
    ("data_two_spaces_keeps_one", [b"data:  two\n\n"], [(M, " two", "")], "", None),
    ("data_tab_kept", [b"data:\tx\n\n"], [(M, "\tx", "")], "", None),
    ("data_empty_value", [b"data:\n\n"], [(M, "", "")], "", None),
    ("data_trailing_empty_line", [b"data: a\ndata:\n\n"], [(M, "a\n", "")], "", None),
    ("multiple_data_lines", [b"data: a\ndata: b\ndata: c\n\n"], [(M, "a\nb\nc", "")], "", None),
    ("colon_in_value", [b"data: a:b: c\n\n"], [(M, "a:b: c", "")], "", None),
    ("nul_in_data", [b"data: a\x00b\n\n"], [(M, "a\x00b", "")], "", None),
    ("space_before_colon_is_other_field", [b"data : x\ndata: y\n\n"], [(M, "y", "")], "", None),
    ("unknown_and_uppercase_fields", [b"foo: bar\nDATA: y\ndata: x\n\n"], [(M, "x", "")], "", None),
    ("comment_lines", [b": ping\n\n:\ndata: x\n:data: y\n\n"], [(M, "x", "")], "", None),
    ("event_with_no_data_not_dispatched", [b"event: x\n\ndata: y\n\n"], [(M, "y", "")], "", None),
    ("event_empty_is_message", [b"event:\ndata: x\n\n"], [(M, "x", "")], "", None),
    ("event_last_wins", [b"event: a\nevent: b\ndata: x\n\n"], [("b", "x", "")], "", None),
    (
        "event_type_reset_after_dispatch",
        [b"event: a\ndata: x\n\ndata: y\n\n"],
        [("a", "x", ""), (M, "y", "")],
        "",
        None,
    ),
    ("unterminated_event", [b"data: a\n"], [], "", None),
    ("unterminated_line", [b"data: a\n\ndata: b"], [(M, "a", "")], "", None),
    ("leading_blank_lines", [b"\n\n\r\n\rdata: x\n\n"], [(M, "x", "")], "", None),
    ("empty_chunks", [b"", b"data: x", b"", b"\n", b"", b"\n", b""], [(M, "x", "")], "", None),
    ("nothing", [], [], "", None),
]


@pytest.mark.parametrize(
    ("chunks", "events", "last_id", "retry"),
    [pytest.param(c, e, i, r, id=name) for name, c, e, i, r in CASES],
)
def test_rules(
    sse_impl: ModuleType,
    chunks: list[bytes],
    events: list[tuple[str, str, str]],
    last_id: str,
    retry: int | None,
) -> None:
    stream = b"".join(chunks)
    expected = (events, last_id, retry)
    for feed in (chunks, [stream], bytewise(stream)):
        got = run(sse_impl, feed)
        assert got[:3] == expected
    assert reference(stream)[:3] == expected


def test_initial_state_and_types(sse_impl: ModuleType) -> None:
    d = sse_impl.SSEDecoder()
    assert (d.last_event_id, d.retry, d.buffered) == ("", None, 0)
    assert variant(sse_impl) == sse_impl.IMPLEMENTATION
    events = d.feed(b"event: e\nid: 1\ndata: x\n\n")
    assert type(events) is list
    (ev,) = events
    assert type(ev) is tuple
    assert all(type(s) is str for s in ev)


def test_buffered(sse_impl: ModuleType) -> None:
    d = sse_impl.SSEDecoder()
    assert d.feed(b"\xef") == []
    assert d.buffered == 1  # a possible BOM is held
    assert d.feed(b"\xbb\xbf") == []
    assert d.buffered == 0  # BOM skipped
    d.feed(b"data: partial")
    assert d.buffered == len(b"data: partial")
    d.feed(b" more")
    assert d.buffered == len(b"data: partial more")
    d.feed(b"\r")
    assert d.buffered == 0  # a CR ends the line; a following LF is swallowed
    assert d.feed(b"\n\n") == [("message", "partial more", "")]
    assert d.buffered == 0


def test_accepts_bytes_like(sse_impl: ModuleType) -> None:
    d = sse_impl.SSEDecoder()
    assert d.feed(bytearray(b"data: a\n")) == []
    assert d.feed(memoryview(b"\n")) == [("message", "a", "")]


def test_all_byte_values_and_huge_line(sse_impl: ModuleType) -> None:
    noise = bytes(range(256)) * 4
    assert run(sse_impl, [noise]) == run(sse_impl, bytewise(noise)) == reference(noise)
    big = b"x" * 1_000_003
    d = sse_impl.SSEDecoder()
    d.feed(b"data: ")
    for i in range(0, len(big), 4096):
        assert d.feed(big[i : i + 4096]) == []
    assert d.buffered == 6 + len(big)
    assert d.feed(b"\n\ndata: small\n\n") == [
        ("message", big.decode(), ""),
        ("message", "small", ""),
    ]
    assert d.buffered == 0


# ---------------------------------------------------------------------------
# Realistic transcripts (tests/data/sse)


def _splits(stream: bytes) -> list[list[bytes]]:
    return [[stream], bytewise(stream), [stream[i : i + 7] for i in range(0, len(stream), 7)]]


def test_openai_transcript(sse_impl: ModuleType) -> None:
    stream = (DATA / "openai_chat.sse").read_bytes()
    for chunks in _splits(stream):
        events, last_id, retry, buffered = run(sse_impl, chunks)
        assert (last_id, retry, buffered) == ("", None, 0)
        assert {e[0] for e in events} == {"message"}
        assert events[-1] == ("message", "[DONE]", "")
        bodies = [json.loads(e[1]) for e in events[:-1]]
        assert {b["object"] for b in bodies} == {"chat.completion.chunk"}
        text = "".join(c["delta"].get("content") or "" for b in bodies for c in b["choices"])
        assert text == "Hello! How can I help you today? \u2615"
        assert bodies[-1]["usage"]["total_tokens"] == 29


def test_anthropic_transcript(sse_impl: ModuleType) -> None:
    stream = (DATA / "anthropic_messages.sse").read_bytes()
    for chunks in _splits(stream):
        events, _, _, buffered = run(sse_impl, chunks)
        assert buffered == 0
        types = [e[0] for e in events]
        assert types[:3] == ["message_start", "content_block_start", "ping"]
        assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert all(json.loads(e[1])["type"] == e[0] for e in events)
        text = "".join(
            json.loads(e[1])["delta"]["text"] for e in events if e[0] == "content_block_delta"
        )
        assert text == "Hello from Claude \u2014 \U0001f44b"


def test_gemini_crlf_transcript(sse_impl: ModuleType) -> None:
    stream = (DATA / "gemini_stream.sse").read_bytes()
    assert b"\r\n\r\n" in stream and b"\n\n" not in stream
    for chunks in _splits(stream):
        events, _, _, buffered = run(sse_impl, chunks)
        assert buffered == 0
        assert len(events) == 3
        bodies = [json.loads(e[1]) for e in events]
        text = "".join(p["text"] for b in bodies for p in b["candidates"][0]["content"]["parts"])
        assert text.startswith("Why did the scarecrow")
        assert bodies[-1]["candidates"][0]["finishReason"] == "STOP"


# ---------------------------------------------------------------------------
# Properties

TOKENS = [
    b"\n", b"\r", b"\r\n", b"\n\n", b":", b": ", b" ", b"data", b"data: ", b"event", b"id",
    b"retry", b"retry: ", b"0", b"7", b"x", b"\x00", BOM, b"\xef", b"\xef\xbb", b"\xbb", b"\xbf",
    "\u00e9".encode(), "\u20ac".encode(), "\U0001f600".encode(), b"\xff", b"\xc3", b"\xe2\x82",
    b"\xf0\x9f", b"\x80", b"data: x\r\n", b"data\r", b"id: 1\r\n", b"event: e\n", b"retry: 42\r",
]  # fmt: skip
_pieces = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)), max_size=40)
streams = st.one_of(_pieces.map(b"".join), _pieces.map(lambda p: BOM + b"".join(p)))


@st.composite
def split_streams(draw: Any) -> tuple[bytes, list[bytes]]:
    stream = draw(streams)
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=16))
    return stream, split_at(stream, cuts)


PROPS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(case=split_streams())
def test_any_split_equals_whole(sse_impl: ModuleType, case: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = case
    whole = run(sse_impl, [stream])
    assert run(sse_impl, chunks) == whole
    assert run(sse_impl, bytewise(stream)) == whole


@PROPS
@given(stream=streams)
def test_matches_whole_stream_reference(sse_impl: ModuleType, stream: bytes) -> None:
    assert run(sse_impl, [stream]) == reference(stream)


@needs_c
@PROPS
@given(case=split_streams())
def test_twins_agree(case: tuple[bytes, list[bytes]]) -> None:
    from _speedups import _sse_c, _sse_py

    _, chunks = case
    assert run(_sse_c, chunks) == run(_sse_py, chunks)


# ---------------------------------------------------------------------------
# Selector


def test_selector_in_process() -> None:
    import _speedups.sse as sse

    assert sse.IMPLEMENTATION == SELECTED
    assert sse.SSEDecoder().feed(b"data: x\n\n") == [("message", "x", "")]
