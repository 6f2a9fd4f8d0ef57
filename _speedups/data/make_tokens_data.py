"""Regenerate the token-counting data files in this folder (a maintainer tool; needs tiktoken).

    python _speedups/data/make_tokens_data.py RANKS_DIR

RANKS_DIR holds OpenAI's original rank files, named either ``<encoding>.tiktoken`` or by
tiktoken's cache name (sha1 of the blob URL), e.g. from the litellm wheel on PyPI
(``litellm/litellm_core_utils/tokenizers/``) or a warm ``TIKTOKEN_CACHE_DIR``. Each file is
checked against tiktoken's expected sha256 before it is converted; nothing is downloaded.

``unicode_classes.zlib`` is built by asking tiktoken's own regex engine which code points
match ``\\p{Lu}``, ``\\p{Ll}``, ... (an Encoding whose ranks are the 256 single bytes and
whose pattern is one class: ``encode_ordinary`` keeps only the matching characters), so
the shipped table follows the Unicode version of the Rust ``regex`` crate inside tiktoken.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from _speedups import _tokens_data as td  # noqa: E402

URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def _find(src: Path, encoding: str) -> bytes:
    for name in (f"{encoding}.tiktoken", hashlib.sha1(URLS[encoding].encode()).hexdigest()):
        path = src / name
        if path.exists():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != td.EXPECTED_SHA256[encoding]:
                raise SystemExit(f"{path}: sha256 mismatch for {encoding}")
            return data
    raise SystemExit(f"{encoding}: no rank file in {src}")


def write_ranks(src: Path) -> None:
    for encoding in td.ENCODINGS:
        lines = [line.split() for line in _find(src, encoding).splitlines() if line]
        tokens = [base64.b64decode(tok) for tok, _ in lines]
        if [int(rank) for _, rank in lines] != list(range(len(tokens))):
            raise SystemExit(f"{encoding}: ranks are not 0..n-1 in file order")
        if max(map(len, tokens)) > 255:
            raise SystemExit(f"{encoding}: a token is longer than 255 bytes")
        raw = td.MAGIC + struct.pack("<I", len(tokens)) + bytes(map(len, tokens))
        out = HERE / f"{encoding}.ranks.zlib"
        out.write_bytes(zlib.compress(raw + b"".join(tokens), 9))
        print(f"{out.name}: {len(tokens)} tokens, {out.stat().st_size} bytes")


def write_classes() -> None:
    import tiktoken

    singles = {bytes([i]): i for i in range(256)}
    text = "".join(chr(c) for c in range(td.MAX_CODE_POINT + 1) if not 0xD800 <= c < 0xE000)

    def members(pattern: str) -> set[int]:
        enc = tiktoken.Encoding(
            "probe", pat_str=pattern, mergeable_ranks=singles, special_tokens={}
        )
        return {ord(ch) for ch in enc.decode_bytes(enc.encode_ordinary(text)).decode("utf-8")}

    classes = [
        (rf"\p{{{name}}}" if name != "s" else r"\s", cls) for name, cls in td.CATEGORIES.items()
    ]
    table = bytearray(td.MAX_CODE_POINT + 1)
    seen: set[int] = set()
    for pattern, cls in classes:
        cps = members(pattern)
        if cps & seen:
            raise SystemExit(f"{pattern}: overlaps another class")
        seen |= cps
        for cp in cps:
            table[cp] = cls
    letters = {td.CATEGORIES[name] for name in ("Lu", "Lt", "Ll", "Lm", "Lo")}
    if members(r"\p{L}") != {cp for cp in seen if table[cp] in letters}:
        raise SystemExit(r"\p{L} is not Lu|Ll|Lt|Lm|Lo")
    words = [
        cp << 4 | table[cp] for cp in range(len(table)) if cp == 0 or table[cp] != table[cp - 1]
    ]
    out = HERE / "unicode_classes.zlib"
    out.write_bytes(zlib.compress(struct.pack(f"<{len(words)}I", *words), 9))
    print(f"{out.name}: {len(words)} runs, {out.stat().st_size} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    write_ranks(Path(sys.argv[1]))
    write_classes()
