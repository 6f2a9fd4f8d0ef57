"""Exact BPE token counts for OpenAI's ``cl100k_base`` and ``o200k_base``: pure-Python twin.

``count_tokens(text, encoding) == len(tiktoken.get_encoding(encoding).encode_ordinary(text))``
for every ``str``. Pre-tokenization runs tiktoken's own patterns (copied verbatim below),
translated mechanically into :mod:`re` syntax: ``\\p{..}`` and ``\\s`` become explicit code
point ranges from the shipped class table (Unicode 16.0, as tiktoken's Rust regex), ``$``
becomes ``\\Z``, and ``(?i:..)`` spells out each letter's simple case folding (``s``
also matches U+017F LATIN SMALL LETTER LONG S, as in Rust). Python 3.11's ``re`` has the
possessive quantifiers the patterns use. Each piece then goes through byte-level BPE with
the rank table: one token if the piece is a token, otherwise the lowest-rank (leftmost on
ties) pair merge loop.

Like tiktoken, a ``str`` with surrogates is first passed through
``text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")``: a paired
surrogate becomes its astral character, a lone one becomes U+FFFD.
"""

from __future__ import annotations

import heapq
import re
import threading
from collections.abc import Callable

from . import _tokens_data

IMPLEMENTATION = "py"
ENCODINGS: tuple[str, ...] = _tokens_data.ENCODINGS

# tiktoken_ext/openai_public.py, verbatim (the tests compare them with the installed tiktoken).
PATTERNS: dict[str, str] = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}

# Simple case folding of the letters inside (?i:..) groups (Rust regex: S, s and U+017F fold).
_FOLD = {"s": "sS\u017f", "k": "kK\u212a"}

_CACHE_MAX = 32768  # pieces remembered per encoding (cleared when full)
_CACHE_PIECE_MAX = 64  # longer pieces are not remembered
_HEAP_MIN = 200  # pieces longer than this (bytes) merge with a heap: O(n log n)
_NO_RANK = 1 << 62


def _class_body(name: str, limit: int) -> str:
    def esc(cp: int) -> str:
        return f"\\U{cp:08x}"

    return "".join(
        esc(a) if a == b else f"{esc(a)}-{esc(min(b, limit))}"
        for a, b in _tokens_data.class_ranges(name)
        if a <= limit
    )


def translate(pattern: str, limit: int = _tokens_data.MAX_CODE_POINT) -> str:
    """tiktoken's ``pat_str`` as an equivalent :mod:`re` pattern (only the syntax it uses).

    Classes keep only code points up to ``limit``.
    """
    out: list[str] = []
    in_class = False
    depth = 0
    fold_depths: list[int] = []  # paren depths of open (?i:..) groups
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            code = pattern[i + 1]
            if code == "p":
                end = pattern.index("}", i)
                body = _class_body(pattern[i + 3 : end], limit)
                out.append(body if in_class else f"[{body}]")
                i = end + 1
                continue
            if code in "sS":
                body = _class_body("s", limit)
                if in_class:
                    if code == "S":
                        raise ValueError("\\S inside a class is not supported")
                    out.append(body)
                else:
                    out.append(f"[{body}]" if code == "s" else f"[^{body}]")
            elif code in "rn":
                out.append(pattern[i : i + 2])
            else:
                raise ValueError(f"unsupported escape \\{code}")
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            elif fold_depths and ch.isalpha():
                ch = _FOLD.get(ch.lower(), ch.lower() + ch.upper())
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif pattern.startswith("(?i:", i):
            depth += 1
            fold_depths.append(depth)
            out.append("(?:")
            i += 4
            continue
        elif ch == "(":
            depth += 1
            out.append(ch)
        elif ch == ")":
            if fold_depths and fold_depths[-1] == depth:
                fold_depths.pop()
            depth -= 1
            out.append(ch)
        elif ch == "$":
            out.append(r"\Z")
        elif fold_depths and ch.isalpha():
            out.append(f"[{_FOLD.get(ch.lower(), ch.lower() + ch.upper())}]")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


# re tests a class's ranges above U+FFFF one by one (below, it has a bitmap), which made
# matching ten times slower. So the compiled patterns cover the BMP only, and characters
# above it are first replaced by a BMP stand-in of the same class: one that is in exactly
# the same pattern classes and is none of the pattern's literal characters.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_STAND_IN = {
    _tokens_data.CLS_OTHER: "!",
    _tokens_data.CLS_LU: "B",
    _tokens_data.CLS_LL: "b",
    _tokens_data.CLS_LMO: "\u00aa",
    _tokens_data.CLS_M: "\u0300",
    _tokens_data.CLS_N: "0",
    _tokens_data.CLS_WS: "\u2000",
}


def _stand_in(match: re.Match[str]) -> str:
    return _STAND_IN[_tokens_data.class_table()[ord(match.group())]]


class _Encoder:
    __slots__ = ("cache", "findall", "ranks")

    def __init__(self, encoding: str) -> None:
        _tokens_data.class_table()
        pattern = re.compile(translate(PATTERNS[encoding], limit=0xFFFF))
        self.findall: Callable[[str], list[str]] = pattern.findall
        self.ranks: dict[bytes, int] = _tokens_data.rank_dict(encoding)
        self.cache: dict[str, int] = {}


_encoders: dict[str, _Encoder] = {}
_lock = threading.Lock()


def _encoder(encoding: str) -> _Encoder:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    with _lock:
        enc = _encoders.get(encoding)
        if enc is None:
            enc = _encoders[encoding] = _Encoder(encoding)
    return enc


def _merge_count(piece: bytes, ranks: dict[bytes, int]) -> int:
    """Tokens of ``piece`` (not itself a token, 2+ bytes) after byte-pair merging."""
    n = len(piece)
    if n > _HEAP_MIN:
        return _merge_count_heap(piece, ranks)
    get = ranks.get
    # starts[j]: offset of part j (plus the end); pair_ranks[j]: rank of parts j + j+1.
    starts = list(range(n + 1))
    pair_ranks = [get(piece[j : j + 2], _NO_RANK) for j in range(n - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_RANK:
            break
        j = pair_ranks.index(best)
        del starts[j + 1]
        del pair_ranks[j]
        if j < len(pair_ranks):
            pair_ranks[j] = get(piece[starts[j] : starts[j + 2]], _NO_RANK)
        if j:
            pair_ranks[j - 1] = get(piece[starts[j - 1] : starts[j + 1]], _NO_RANK)
    return len(starts) - 1


def _merge_count_heap(piece: bytes, ranks: dict[bytes, int]) -> int:
    """Same merges as :func:`_merge_count` (lowest rank, then leftmost) with a heap."""
    n = len(piece)
    get = ranks.get
    nxt = list(range(1, n + 1))  # end of the part starting at i
    prv = list(range(-1, n))  # start of the part ending at i
    cur: list[int | None] = [get(piece[i : i + 2]) for i in range(n - 1)] + [None]
    heap = [(r, i) for i, r in enumerate(cur) if r is not None]
    heapq.heapify(heap)
    parts = n
    while heap:
        r, i = heapq.heappop(heap)
        if cur[i] != r:  # stale: part i was merged away or its pair changed
            continue
        j = nxt[i]
        k = nxt[j]
        cur[j] = None
        nxt[i] = k
        if k < n:
            prv[k] = i
            r2 = cur[i] = get(piece[i : nxt[k]])
            if r2 is not None:
                heapq.heappush(heap, (r2, i))
        else:
            cur[i] = None
        h = prv[i]
        if h >= 0:
            r2 = cur[h] = get(piece[h:k])
            if r2 is not None:
                heapq.heappush(heap, (r2, h))
        parts -= 1
    return parts


def _pieces(text: str, enc: _Encoder) -> list[str]:
    if text.isascii():
        return enc.findall(text)
    bmp, astral = _ASTRAL.subn(_stand_in, text)
    pieces = enc.findall(bmp)
    if astral:  # same lengths, original characters
        pos = 0
        for i, piece in enumerate(pieces):
            end = pos + len(piece)
            pieces[i] = text[pos:end]
            pos = end
    return pieces


def _count(text: str, enc: _Encoder) -> int:
    cache = enc.cache
    ranks = enc.ranks
    total = 0
    for piece in _pieces(text, enc):
        n = cache.get(piece)
        if n is None:
            data = piece.encode("utf-8")
            n = 1 if data in ranks else _merge_count(data, ranks)
            if len(piece) <= _CACHE_PIECE_MAX:
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[piece] = n
        total += n
    return total


def count_tokens(text: str, encoding: str) -> int:
    """``len(enc.encode_ordinary(text))`` for tiktoken encoding ``encoding``."""
    enc = _encoders.get(encoding) or _encoder(encoding)
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    try:
        return _count(text, enc)
    except UnicodeEncodeError:  # surrogates: tiktoken's own fix-up, then count again
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return _count(text, enc)
