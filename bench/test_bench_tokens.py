"""Token counting: pure twin, Cython twin and tiktoken's encode_ordinary on the same text.

Run: ``python -m pytest bench/test_bench_tokens.py -m benchmark -p no:cacheprovider``.
tiktoken is built offline from the shipped ranks (same as tests/speedups/test_tokens.py).
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from unittest import mock

import pytest

from _speedups import NO_EXTENSIONS, _tokens_data

PROSE = (
    "The gateway counts tokens before it forwards a request, so that rate limits can be "
    "enforced without waiting for the provider's reported usage. Counting must be exact, "
    "cheap, and it must never reach the network: rank tables ship inside the package. "
    "Isn't it nice when a 16 KB prompt costs microseconds? We'd rather not guess; they've "
    "measured it on 2 cores, at 3.5 GHz, in 2024 and 2025.\n\n"
)
CODE = '''def count_chat_tokens(messages: list[dict], model: str) -> int:
    """Follow the cookbook: 3 tokens per message, +1 per name, +3 for priming."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if isinstance(value, str):
                total += count_tokens(value, encoding_for_model(model))
            if key == "name":
                total += 1
    return total  # e.g. 129 for the 7-message example


'''
CJK = (
    "大規模言語モデルのゲートウェイは、トークン数を正確に数える必要があります。"
    "中文文本：你好，世界！한국어도 지원합니다.\n"  # noqa: RUF001
)
EMOJI = (
    "Ship it 🚀🚀 — tests pass ✅, benchmarks 📈, family 👨‍👩‍👧‍👦, thumbs 👍🏽👍🏿, flags 🇺🇸🇯🇵.\n"
)


def mixed_text(size: int) -> str:
    """Deterministic mix of prose, code, CJK and emoji, cut to ``size`` characters."""
    parts = []
    i = 0
    while sum(map(len, parts)) < size:
        parts += [
            PROSE.replace("2024", str(2024 + i)),
            CODE.replace("129", str(129 + i)),
            CJK,
            EMOJI,
        ]
        i += 1
    return "".join(parts)[:size]


TEXT_1K = mixed_text(1024)
TEXT_16K = mixed_text(16 * 1024)


def fresh_text(seed: int) -> str:
    """TEXT_16K with its words shuffled and a third of them scrambled: pieces the caches
    (the twins remember recent pieces that needed merging) have not seen."""
    rng = random.Random(seed)
    words = TEXT_16K.split(" ")
    rng.shuffle(words)
    for i in range(0, len(words), 3):
        letters = list(words[i])
        rng.shuffle(letters)
        words[i] = "".join(letters)
    return " ".join(words)


def _tiktoken(encoding: str) -> Callable[[str], int]:
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken_ext import openai_public

    ranks = _tokens_data.rank_dict(encoding)
    with mock.patch.object(openai_public, "load_tiktoken_bpe", lambda *a, **k: ranks):
        enc = tiktoken.Encoding(**getattr(openai_public, encoding)())
    return lambda text: len(enc.encode_ordinary(text))


def _twin(variant: str, encoding: str) -> Callable[[str], int]:
    if variant == "c" and NO_EXTENSIONS:
        pytest.skip("GATEWAY_NO_EXTENSIONS=1")
    mod = importlib.import_module(f"_speedups._tokens_{variant}")
    mod.count_tokens("warm up", encoding)  # load the tables outside the timing
    return lambda text: mod.count_tokens(text, encoding)


IMPLS = ["py", "c", "tiktoken"]


def _counter(impl: str, encoding: str) -> Callable[[str], int]:
    return _tiktoken(encoding) if impl == "tiktoken" else _twin(impl, encoding)


@pytest.mark.benchmark(group="tokens-1k")
@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("impl", IMPLS)
def test_tokens_1k(benchmark, impl: str, encoding: str) -> None:
    count = _counter(impl, encoding)
    expected = _tiktoken(encoding)(TEXT_1K)
    assert benchmark(count, TEXT_1K) == expected


@pytest.mark.benchmark(group="tokens-16k")
@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("impl", IMPLS)
def test_tokens_16k(benchmark, impl: str, encoding: str) -> None:
    count = _counter(impl, encoding)
    expected = _tiktoken(encoding)(TEXT_16K)
    assert benchmark(count, TEXT_16K) == expected


@pytest.mark.benchmark(group="tokens-16k-fresh")
@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("impl", IMPLS)
def test_tokens_16k_fresh(benchmark, impl: str, encoding: str) -> None:
    count = _counter(impl, encoding)
    seeds = iter(range(10**9))
    benchmark.pedantic(
        count, setup=lambda: ((fresh_text(next(seeds)),), {}), rounds=60, warmup_rounds=2
    )
