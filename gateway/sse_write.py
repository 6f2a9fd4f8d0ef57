"""Writing Server-Sent Events: every event the gateway sends is built by ``event()``.

WHATWG SSE ends a line at CR, LF or CRLF, and a field's value runs to the end of its
line, so data holding a line break must go out as several ``data:`` lines (the client
joins them with LF). Gluing ``b"data: " + data`` by hand goes wrong the day the data
holds a break: the client reads what follows it as lines of no field and drops them.

Upstream events are relayed re-written, never as raw bytes. An upstream may spread one
JSON text over several ``data:`` lines (legal SSE); ``json_line()`` puts it back on
one, which clients and the gateway's own frame readers (commit point, usage count,
``/v1/messages`` translation) expect of an OpenAI chunk.
"""

from __future__ import annotations

import re

__all__ = ["DONE", "event", "json_event", "json_line"]

_BREAK = re.compile(rb"\r\n|\r|\n")


def event(data: bytes, name: bytes = b"") -> bytes:
    """One SSE event: ``event: <name>`` when a name is given, a ``data:`` line for each
    line of ``data`` (split at CR, LF and CRLF), and the blank line that ends it.

    The client reads back ``data`` with each line break as LF (SSE cannot carry a CR).
    A name cannot span lines: line breaks in it are dropped.
    """
    if b"\n" in data or b"\r" in data:
        data = _BREAK.sub(b"\ndata: ", data)
    if not name:
        return b"data: " + data + b"\n\n"
    if b"\n" in name or b"\r" in name:
        name = _BREAK.sub(b"", name)
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


def json_line(text: str) -> str:
    """A JSON text on one line. Only for text already decoded as JSON: a JSON string
    cannot hold a raw line break, so every break in valid JSON is whitespace between
    tokens and may become a space."""
    if "\n" in text or "\r" in text:
        return text.replace("\r", " ").replace("\n", " ")
    return text


def json_event(text: str, name: str = "") -> bytes:
    """An upstream event's JSON data (already decoded, so known valid) relayed on one line."""
    if name or "\n" in text or "\r" in text:
        return event(json_line(text).encode(), name.encode())
    return b"data: " + text.encode() + b"\n\n"  # the usual chunk: the same bytes, sooner


DONE = event(b"[DONE]")  # the end of an OpenAI stream
