"""Server-sent events decoder, pure-Python twin of ``_sse_c``.

Implements the WHATWG HTML "Parsing an event stream" and "Interpreting an
event stream" rules on raw bytes fed in arbitrary chunks:

* line ends are LF, CR or CRLF (a CRLF split across two chunks is one line end);
* one UTF-8 BOM at the very start of the stream is skipped;
* text is UTF-8 with U+FFFD for invalid sequences. Line ends are ASCII, so
  decoding each complete line (or field value) on its own gives the same text
  as decoding the whole stream at once.

One documented bound: a ``retry`` value whose integer does not fit in an
unsigned 64-bit integer is ignored, as Chromium does (the spec sets no bound,
and parsing an unbounded digit string would be a denial-of-service lever).
"""

from __future__ import annotations

__all__ = ("IMPLEMENTATION", "SSEDecoder")

IMPLEMENTATION = "py"

_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A
_COLON = 0x3A
_DIGITS = frozenset(b"0123456789")
_RETRY_MAX = 2**64 - 1
_MESSAGE = "message"

Event = tuple[str, str, str]


def _parse_retry(value: bytes) -> int | None:
    """ASCII digits only, non-empty, fitting in 64 bits; otherwise None (ignored)."""
    if not value or not _DIGITS.issuperset(value):
        return None
    digits = value.lstrip(b"0")
    if len(digits) > 20:
        return None
    n = int(digits or b"0")
    return n if n <= _RETRY_MAX else None


class SSEDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the events it completed.

    Each event is ``(event_type, data, last_event_id)``. ``last_event_id`` is
    the stream's last event ID string: it persists across events and is
    updated at every blank line, as the spec says, so an ``id:`` line whose
    event is not yet terminated does not show here.
    """

    __slots__ = (
        "_bom_done",
        "_buf",
        "_data",
        "_event_type",
        "_id_buf",
        "_last_event_id",
        "_retry",
        "_skip_lf",
    )

    def __init__(self) -> None:
        self._buf = bytearray()  # partial line (no line end seen yet)
        self._bom_done = False  # past the possible BOM at stream start
        self._skip_lf = False  # the last chunk ended with CR
        self._data: list[str] = []
        self._event_type = ""
        self._id_buf = ""
        self._last_event_id = ""
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str:
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The last valid ``retry:`` value in milliseconds, or None."""
        return self._retry

    @property
    def buffered(self) -> int:
        """Bytes held waiting for a line end."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Event]:
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        if not self._bom_done:
            # Hold a possible BOM prefix in the line buffer until it is decided.
            # Its bytes carry no line end, so on a mismatch they simply stay as data.
            need = 3 - len(self._buf)
            head = bytes(self._buf) + chunk[:need]
            if not _BOM.startswith(head):
                self._bom_done = True
            elif len(head) == 3:
                self._bom_done = True
                self._buf.clear()
                chunk = chunk[need:]
            else:
                self._buf.extend(chunk)
                return []
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
                if not chunk:
                    return []

        lines = chunk.splitlines()  # bytes.splitlines splits on LF, CR and CRLF only
        last = chunk[-1]
        tail = None
        if last == _CR:
            self._skip_lf = True  # a LF starting the next chunk completes this CRLF
        elif last != _LF:
            tail = lines.pop()  # no line end yet: keep it for the next chunk
        if lines and self._buf:
            lines[0] = bytes(self._buf) + lines[0]
            self._buf.clear()
        if tail is not None:
            self._buf += tail
        return self._lines(lines) if lines else []

    def _lines(self, lines: list[bytes]) -> list[Event]:
        events: list[Event] = []
        for line in lines:
            if not line:
                self._dispatch(events)
                continue
            if line[0] == _COLON:
                continue  # comment
            colon = line.find(b":")
            if colon < 0:
                field, value = line, b""
            else:
                field = line[:colon]
                value = line[colon + 1 :]
                if value[:1] == b" ":
                    value = value[1:]
            if field == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif field == b"event":
                self._event_type = value.decode("utf-8", "replace")
            elif field == b"id":
                if b"\x00" not in value:
                    self._id_buf = value.decode("utf-8", "replace")
            elif field == b"retry":
                retry = _parse_retry(value)
                if retry is not None:
                    self._retry = retry
        return events

    def _dispatch(self, events: list[Event]) -> None:
        self._last_event_id = self._id_buf
        if self._data:
            events.append(
                (self._event_type or _MESSAGE, "\n".join(self._data), self._id_buf),
            )
            self._data = []
        self._event_type = ""
