"""Token-bucket math: one take and one settle, a TPM bucket in epoch microseconds."""

from __future__ import annotations

from types import ModuleType

import pytest

NOW = 1_732_000_000_000_000
CAPACITY = 200_000  # TPM 200k
PERIOD = 60_000_000
STATE = (NOW + 2_400_000, 0)  # partly drained


@pytest.mark.benchmark(group="bucket")
def test_bucket_take(benchmark, bucket_impl: ModuleType) -> None:
    take = bucket_impl.take
    allowed, _, remaining, _, _ = benchmark(take, STATE, NOW + 800_000, CAPACITY, PERIOD, 1_500)
    assert allowed and remaining == 193_166


@pytest.mark.benchmark(group="bucket")
def test_bucket_settle(benchmark, bucket_impl: ModuleType) -> None:
    settle = bucket_impl.settle
    state, remaining = benchmark(settle, STATE, NOW + 800_000, CAPACITY, PERIOD, 1_500, 913)
    assert state == (NOW + 2_223_900, 0) and remaining == 195_253
