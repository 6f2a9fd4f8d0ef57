"""Token-bucket math: one take and one settle, a TPM bucket in epoch microseconds."""

from __future__ import annotations

import importlib

import pytest

from _speedups import NO_EXTENSIONS

NOW = 1_732_000_000_000_000
CAPACITY = 200_000  # TPM 200k
PERIOD = 60_000_000
STATE = (NOW + 2_400_000, 0)  # partly drained

VARIANTS = [
    "py",
    pytest.param(
        "c",
        marks=[
            pytest.mark.c_extension,
            pytest.mark.skipif(NO_EXTENSIONS, reason="GATEWAY_NO_EXTENSIONS=1"),
        ],
    ),
]


@pytest.mark.benchmark(group="bucket")
@pytest.mark.parametrize("variant", VARIANTS)
def test_bucket_take(benchmark, variant: str) -> None:
    take = importlib.import_module(f"_speedups._bucket_{variant}").take
    allowed, _, remaining, _, _ = benchmark(take, STATE, NOW + 800_000, CAPACITY, PERIOD, 1_500)
    assert allowed and remaining == 193_166


@pytest.mark.benchmark(group="bucket")
@pytest.mark.parametrize("variant", VARIANTS)
def test_bucket_settle(benchmark, variant: str) -> None:
    settle = importlib.import_module(f"_speedups._bucket_{variant}").settle
    state, remaining = benchmark(settle, STATE, NOW + 800_000, CAPACITY, PERIOD, 1_500, 913)
    assert state == (NOW + 2_223_900, 0) and remaining == 195_253
