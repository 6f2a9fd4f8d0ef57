"""The cost the gateway reports (gateway/pricing.py, pipeline/settle.py) and the resource
gauges the alerts read (gateway/telemetry/resources.py)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway import pricing
from gateway.config import Price
from gateway.pipeline import settle
from gateway.telemetry import resources
from gateway.wire.chat import Usage


@pytest.mark.parametrize(
    ("provider", "model", "want"),
    [
        ("openai", "gpt-4o", "gpt-4o"),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),  # dated snapshot
        ("openai", "gpt-4o-mini", "gpt-4o-mini"),  # not gpt-4o's price
        ("azure", "gpt-4o", "gpt-4o"),
        ("azure", "gpt-35-turbo", "gpt-3.5-turbo"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("gemini", "models/gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini", "gemini-2.5-pro", "gemini-2.5-pro"),
    ],
)
def test_lookup_finds_the_model_and_its_snapshots(provider: str, model: str, want: str) -> None:
    table = pricing.PRICES[provider]
    assert pricing.lookup(provider, model) == table[want]


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "my-finetune"),
        ("openai", "gpt-4o-audio-preview"),  # a different product, not gpt-4o's price
        ("anthropic", "claude-unknown-9"),
        ("vllm", "llama"),
        ("openai", "2024-08-06"),
    ],
)
def test_unknown_models_are_unpriced(provider: str, model: str) -> None:
    assert pricing.lookup(provider, model) is None


def test_mock_is_free() -> None:
    assert (
        pricing.cost_usd(pricing.Tokens(10**6, 10**6, 10**6), pricing.lookup("mock", "x")).total
        == 0
    )  # type: ignore[arg-type]


def test_table_is_sane() -> None:
    for provider, table in pricing.PRICES.items():
        for model, p in table.items():
            assert p.input >= 0 and p.output >= 0, (provider, model)
            if p.cached_input is not None:
                assert p.cached_input < p.input, (provider, model)


def test_cost_by_token_class() -> None:
    price = Price(input=2.5, cached_input=1.25, output=10.0)
    usage = Usage(
        prompt_tokens=1000, completion_tokens=500, prompt_tokens_details={"cached_tokens": 400}
    )
    tokens = pricing.tokens_of(usage)
    assert tokens == pricing.Tokens(input=600, cached_input=400, output=500)
    cost = pricing.cost_usd(tokens, price)
    assert cost.input == pytest.approx(600 * 2.5e-6)
    assert cost.cached_input == pytest.approx(400 * 1.25e-6)
    assert cost.output == pytest.approx(500 * 10e-6)
    assert cost.total == pytest.approx(0.0015 + 0.0005 + 0.005)
    # no cached price published: cached tokens cost the input price
    assert pricing.cost_usd(tokens, Price(input=2.0, output=1.0)).cached_input == pytest.approx(
        400 * 2e-6
    )


@pytest.mark.parametrize(
    "details",
    [None, {}, {"cached_tokens": "many"}, {"cached_tokens": 10**9}, {"cached_tokens": -5}],
)
def test_tokens_of_odd_usage(details: Any) -> None:
    t = pricing.tokens_of(
        Usage(prompt_tokens=100, completion_tokens=7, prompt_tokens_details=details)
    )
    assert t.input + t.cached_input == 100 and min(t) >= 0 and t.output == 7


def _dep(provider: str, model: str, label: str, price: Price | None = None) -> Any:
    return SimpleNamespace(provider=provider, model=model, label=label, price=price, cache={})


def _sample(name: str, provider: str, label: str) -> float:
    labels = {"provider": provider, "model": label}
    if name == "llm_cost_usd_total":  # by team too: a key with no team counts as "none"
        labels["team"] = "none"
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_settle_records_cost_config_price_first() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=0)
    before = _sample("llm_cost_usd_total", "openai", "pricing-test-a")
    settle.record_usage(_dep("openai", "gpt-4o", "pricing-test-a"), usage)  # table: 2.5
    settle.record_usage(_dep("openai", "gpt-4o", "pricing-test-a", Price(input=1.0)), usage)
    assert _sample("llm_cost_usd_total", "openai", "pricing-test-a") - before == pytest.approx(3.5)


def test_settle_counts_unpriced_models_apart() -> None:
    dep = _dep("openai", "my-finetune", "pricing-test-b")
    settle.record_usage(dep, Usage(prompt_tokens=100, completion_tokens=100))
    assert _sample("llm_unpriced_requests_total", "openai", "pricing-test-b") == 1
    assert REGISTRY.get_sample_value(
        "llm_cost_usd_total", {"provider": "openai", "model": "pricing-test-b"}
    ) in (None, 0.0)


def test_negative_usage_from_an_upstream_counts_as_none() -> None:
    import msgspec

    usage = msgspec.json.decode(
        b'{"prompt_tokens": -1000000, "completion_tokens": -5, "total_tokens": -1000005}',
        type=Usage,
    )
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (0, 0, 0)
    assert Usage(prompt_tokens=-3, completion_tokens=4).prompt_tokens == 0
    before = _sample("llm_cost_usd_total", "openai", "pricing-test-c")
    charge = settle.record_usage(_dep("openai", "gpt-4o", "pricing-test-c"), usage)
    assert charge.total == 0
    assert _sample("llm_cost_usd_total", "openai", "pricing-test-c") == before


# -- resource gauges -----------------------------------------------------------------------


def test_process_gauges() -> None:
    assert (resources.rss_bytes() or 0) > 1 << 20
    assert (resources.open_fds() or 0) >= 3


def test_cgroup_v2(tmp_path: Path) -> None:
    (tmp_path / "memory.current").write_text("1000000\n")
    (tmp_path / "memory.stat").write_text("anon 600000\ninactive_file 250000\nactive_file 1\n")
    (tmp_path / "memory.max").write_text("2000000\n")
    assert resources.container_memory(tmp_path) == (750000, 2000000.0)
    (tmp_path / "memory.max").write_text("max\n")
    assert resources.container_memory(tmp_path) == (750000, math.inf)


def test_cgroup_v1(tmp_path: Path) -> None:
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.usage_in_bytes").write_text("5000\n")
    (v1 / "memory.stat").write_text("cache 10\ntotal_inactive_file 1000\n")
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    assert resources.container_memory(tmp_path) == (4000, math.inf)
    (v1 / "memory.limit_in_bytes").write_text("8000\n")
    assert resources.container_memory(tmp_path) == (4000, 8000.0)


def test_no_cgroup(tmp_path: Path) -> None:
    assert resources.container_memory(tmp_path) is None
