"""Token-counting kernel: both twins against tiktoken itself, offline.

The reference is a real ``tiktoken.Encoding`` built from tiktoken's own encoding
constructor (official ``pat_str`` and special tokens) with the rank table loader replaced
by the ranks shipped in ``_speedups/data`` -- which a test below proves are byte for byte
OpenAI's published files. Nothing is downloaded.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public

from _speedups import NO_EXTENSIONS, _tokens_data, _tokens_py
from tests.speedups.conftest import needs_c, run_python, variant

ROOT = Path(__file__).resolve().parents[2]
ENCODINGS = ("cl100k_base", "o200k_base")


@pytest.fixture(scope="session")
def params() -> dict[str, dict[str, object]]:
    out = {}
    for name in ENCODINGS:

        def no_download(blobpath: str, expected_hash: str | None = None, _n: str = name) -> object:
            assert blobpath.endswith(f"/{_n}.tiktoken")
            assert expected_hash == _tokens_data.EXPECTED_SHA256[_n]
            return _tokens_data.rank_dict(_n)

        with mock.patch.object(openai_public, "load_tiktoken_bpe", no_download):
            out[name] = getattr(openai_public, name)()
    return out


@pytest.fixture(scope="session")
def reference(params: dict[str, dict[str, object]]) -> dict[str, tiktoken.Encoding]:
    return {name: tiktoken.Encoding(**p) for name, p in params.items()}  # type: ignore[arg-type]


def expected(reference: dict[str, tiktoken.Encoding], text: str, encoding: str) -> int:
    return len(reference[encoding].encode_ordinary(text))


# --- the data ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_shipped_ranks_are_openais_file(encoding: str) -> None:
    assert _tokens_data.verify(encoding)


def test_patterns_are_tiktokens(params: dict[str, dict[str, object]]) -> None:
    assert {name: p["pat_str"] for name, p in params.items()} == _tokens_py.PATTERNS


def test_class_table_matches_tiktoken_regex_engine() -> None:
    """Every code point's category, as tiktoken's Rust regex sees it (Unicode 16.0)."""
    singles = {bytes([i]): i for i in range(256)}
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    for name in (*_tokens_data.CATEGORIES, "L"):
        pat = r"\s" if name == "s" else rf"\p{{{name}}}"
        enc = tiktoken.Encoding("probe", pat_str=pat, mergeable_ranks=singles, special_tokens={})
        got = {ord(ch) for ch in enc.decode_bytes(enc.encode_ordinary(text)).decode()}
        mine = {cp for a, b in _tokens_data.class_ranges(name) for cp in range(a, b + 1)}
        assert got == mine, name


def test_white_space_is_not_str_isspace() -> None:
    ws = {cp for a, b in _tokens_data.class_ranges("s") for cp in range(a, b + 1)}
    assert {cp for cp in range(0x110000) if chr(cp).isspace()} - ws == {0x1C, 0x1D, 0x1E, 0x1F}
    assert chr(0x85) in "".join(map(chr, ws)) and 0x180E not in ws


# --- counts --------------------------------------------------------------------------------

CORPUS = [
    "",
    "a",
    " ",
    "hello world",
    "Hello, World! How's it going? I'm fine; you'd've thought.",
    "I'M HE'S SHE'LL WE'VE THEY'RE IT'D 'T 'Ll 'lL '\u017f '\u017ft 's's''s",
    "don't DON'T won\u2019t 'tis 'twas '' ''' 'x",
    *("1234567890"[:n] for n in range(1, 11)),
    "a1b22c333d4444e55555 x123456789012y",
    "١٢٣٤٥ ۱۲۳ ४२ ¼½ Ⅻ ①②",
    "   \n",
    "a  \n  b",
    "  \n  ",
    "x \n\n \t \n y  ",
    "\r\n\r\nabc\r\n",
    "\n\n\n",
    "\t\tindented\ttabs\t",
    "\u00a0non\u00a0breaking\u3000ideographic\u2003em",
    "\x1c\x1d\x1e\x1f\x85\u2028\u2029\u180e",
    "日本語のテキストと漢字、カタカナ。中文文本：你好，世界！",  # noqa: RUF001
    "한국어 텍스트입니다",
    "👨‍👩‍👧‍👦 👍🏽👍🏿 🏳️‍🌈 ❤️ 🇺🇸🇯🇵",
    "e\u0301\u0301 a\u0308 \u0301 !\u0301 Z\u0351\u036b\u0343\u036a",
    "مرحبا بالعالم، كيف حالك؟",
    "नमस्ते दुनिया, यह हिंदी है।",
    "ΣΑΣ σας ǅungla ǲ ǈ ʰʲ ᵃ",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\nprint(f(3))\n",
    '{"key": [1, 2, 3], "url": "https://example.com/a/b?c=d&e=f"}\n',
    '<div class="x">&nbsp;</div>\n// comment /* block */ a/b/c //\n/\n',
    "!!!\n/\n/// ...\r\n",
    "\ud800",
    "a\udfffb",
    "\ud83d\ude00 paired surrogates \ud83d",
    "\ufffd\ufffd",
    "\x00\x01\x7f\x80\xff",
    "\U0010ffff\U000e0001\U000f0000",
    "\u1c89\ua7cb\U00016d43\U000105c0 Unicode 16 letters, \u0897 mark, \U0001ccf0 digit",
]
LONG = [" " * 10_000, "a" * 10_000, " " * 5000 + "x", "1" * 10_000, "\n" * 3000, "😀" * 2000]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_corpus(tokens_impl: ModuleType, reference, encoding: str, text: str) -> None:
    assert tokens_impl.count_tokens(text, encoding) == expected(reference, text, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("text", LONG, ids=range(len(LONG)))
def test_long_runs(tokens_impl: ModuleType, reference, encoding: str, text: str) -> None:
    assert tokens_impl.count_tokens(text, encoding) == expected(reference, text, encoding)


def test_large_mixed_input(tokens_impl: ModuleType, reference) -> None:
    text = "".join(CORPUS[:-8]) * 40  # about 60 KB, repeated pieces hit the piece cache
    for encoding in ENCODINGS:
        assert tokens_impl.count_tokens(text, encoding) == expected(reference, text, encoding)
        assert tokens_impl.count_tokens(text, encoding) == expected(reference, text, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_code_point_in_context(tokens_impl: ModuleType, reference, encoding: str) -> None:
    """All of 0..0x10FFFF (surrogates too), each beside letters, a digit, space and quote."""
    step = 1 if tokens_impl.IMPLEMENTATION == "c" else 61
    text = "".join(f"a{chr(c)}'s {chr(c)}1" for c in range(0, 0x110000, step))
    assert tokens_impl.count_tokens(text, encoding) == expected(reference, text, encoding)


def test_threads(tokens_impl: ModuleType, reference) -> None:
    """Concurrent counts (the C twin drops the GIL for long texts and shares a piece cache)."""
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyzéß日本語"
    texts = [
        " ".join("".join(rng.choices(letters, k=rng.randint(1, 14))) for _ in range(1500))
        for _ in range(6)
    ]
    want = {(t, e): expected(reference, t, e) for t in texts for e in ENCODINGS}
    jobs = [(t, e) for t in texts for e in ENCODINGS] * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda job: tokens_impl.count_tokens(*job), jobs))
    assert got == [want[job] for job in jobs]


def test_api(tokens_impl: ModuleType) -> None:
    assert tokens_impl.ENCODINGS == ENCODINGS
    assert variant(tokens_impl) == tokens_impl.IMPLEMENTATION
    with pytest.raises(ValueError, match="unknown encoding"):
        tokens_impl.count_tokens("x", "p50k_base")
    with pytest.raises(TypeError):
        tokens_impl.count_tokens(b"bytes", "o200k_base")
    with pytest.raises(TypeError):
        tokens_impl.count_tokens(None, "cl100k_base")

    class Text(str):
        pass

    assert tokens_impl.count_tokens(Text("hello world"), "o200k_base") == 2


# --- properties ----------------------------------------------------------------------------

TRICKY = list(
    "aAzZsStTlLvVeErRdDmM\u017f'\u2019 0123456789\t\n\r\x0b\x0c\u00a0\u3000\u2028/!?.,-_#@"
    "é\u0301\u0308ßǅʰ日本語한ل्ह١¼Ⅻ😀👍🏽\u200d\ufe0f\ufffd\U0001f1fa\U0001f1f8\u1c89\U00016d43"
)
texts = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(exclude_categories=())),  # surrogates included
    st.text(alphabet=st.sampled_from(TRICKY) | st.characters(), max_size=60),
    st.text(alphabet=st.sampled_from(TRICKY), max_size=80),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_hypothesis_equals_tiktoken(tokens_impl: ModuleType, reference, text: str) -> None:
    for encoding in ENCODINGS:
        assert tokens_impl.count_tokens(text, encoding) == expected(reference, text, encoding)


@pytest.mark.c_extension
@needs_c
@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_twins_agree(text: str) -> None:
    from _speedups import _tokens_c

    for encoding in ENCODINGS:
        assert _tokens_c.count_tokens(text, encoding) == _tokens_py.count_tokens(text, encoding)


LONG_PIECES = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzé日本ß\u017f"), min_size=257, max_size=700
) | st.text(
    alphabet=st.sampled_from("!@#$%^&*()[]{}<>/\\|~`+=-_.,;:?\"'"), min_size=257, max_size=700
)


@settings(max_examples=40, deadline=None)
@given(text=LONG_PIECES)
def test_long_pieces_equal_tiktoken(tokens_impl: ModuleType, reference, text: str) -> None:
    """Single pieces longer than the small-array merge limit take the heap merge."""
    for encoding in ENCODINGS:
        assert tokens_impl.count_tokens(text, encoding) == expected(reference, text, encoding)


@settings(max_examples=200, deadline=None)
@given(
    piece=st.binary(min_size=2, max_size=300) | st.text(min_size=1, max_size=120).map(str.encode)
)
def test_heap_merge_equals_list_merge(piece: bytes) -> None:
    ranks = _tokens_data.rank_dict("o200k_base")
    assert _tokens_py._merge_count_heap(piece, ranks) == _tokens_py._merge_count(piece, ranks)


# --- which twin loads ----------------------------------------------------------------------


def test_rank_tables_load_lazily_per_encoding() -> None:
    code = (
        "from _speedups import _tokens_data as d, tokens; "
        "a = sorted(d._raw); tokens.count_tokens('x', 'o200k_base'); print(a, sorted(d._raw))"
    )
    assert run_python(code, "1" if NO_EXTENSIONS else None) == "[] ['o200k_base']"
