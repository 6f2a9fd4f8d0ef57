"""What a request cost: a price table shipped with the package and one pure function.

Prices are USD per million tokens by token class, as the providers publish them
(standard, pay-as-you-go, prompts up to 200k tokens; no batch or priority tiers):

- OpenAI: https://platform.openai.com/docs/pricing (Azure OpenAI's global
  standard deployments charge the same; regional and data-zone deployments
  charge about 10 % more: set ``price:`` on those deployments)
- Anthropic: https://docs.anthropic.com/en/docs/about-claude/pricing
  ("cache hits" are the cached-input class)
- Gemini: https://ai.google.dev/gemini-api/docs/pricing

Checked 2026-11. A deployment's ``price:`` in the config overrides this table.
A model found in neither is *unpriced*: the gateway counts it in
``llm_unpriced_requests_total`` and never adds it to the spend as $0.

Token classes, from an OpenAI-shaped ``Usage`` (what every adapter produces):
``input`` = prompt tokens not read from a cache, ``cached_input`` = cached prompt
tokens, ``output`` = completion tokens (reasoning included: every provider bills
thinking as output). Known under-estimates, kept simple on purpose: Anthropic
cache *writes* (1.25x input) and Gemini's long-prompt tier (over 200k tokens) are
priced as plain input.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple, TypeVar

from gateway.config import Price
from gateway.providers.base import Deployment
from gateway.wire.chat import Usage

_P = Price
T = TypeVar("T")

# (input, cached input, output); cached_input None = no discount published.
_OPENAI: dict[str, Price] = {
    "gpt-5.4": _P(input=2.50, cached_input=0.25, output=15.00),
    "gpt-5.4-mini": _P(input=0.75, cached_input=0.075, output=4.50),
    "gpt-5.2": _P(input=1.75, cached_input=0.175, output=14.00),
    "gpt-5": _P(input=1.25, cached_input=0.125, output=10.00),
    "gpt-5-mini": _P(input=0.25, cached_input=0.025, output=2.00),
    "gpt-5-nano": _P(input=0.05, cached_input=0.005, output=0.40),
    "gpt-4.1": _P(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4.1-mini": _P(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1-nano": _P(input=0.10, cached_input=0.025, output=0.40),
    "gpt-4o": _P(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4o-mini": _P(input=0.15, cached_input=0.075, output=0.60),
    "o1": _P(input=15.00, cached_input=7.50, output=60.00),
    "o3": _P(input=2.00, cached_input=0.50, output=8.00),
    "o3-mini": _P(input=1.10, cached_input=0.55, output=4.40),
    "o4-mini": _P(input=1.10, cached_input=0.275, output=4.40),
    "gpt-3.5-turbo": _P(input=0.50, output=1.50),
    "text-embedding-3-small": _P(input=0.02),
    "text-embedding-3-large": _P(input=0.13),
    "text-embedding-ada-002": _P(input=0.10),
}
_ANTHROPIC: dict[str, Price] = {
    "claude-opus-4-5": _P(input=5.00, cached_input=0.50, output=25.00),
    "claude-opus-4-1": _P(input=15.00, cached_input=1.50, output=75.00),
    "claude-opus-4": _P(input=15.00, cached_input=1.50, output=75.00),
    "claude-opus-4-0": _P(input=15.00, cached_input=1.50, output=75.00),
    "claude-sonnet-4-5": _P(input=3.00, cached_input=0.30, output=15.00),
    "claude-sonnet-4": _P(input=3.00, cached_input=0.30, output=15.00),
    "claude-sonnet-4-0": _P(input=3.00, cached_input=0.30, output=15.00),
    "claude-3-7-sonnet": _P(input=3.00, cached_input=0.30, output=15.00),
    "claude-3-5-sonnet": _P(input=3.00, cached_input=0.30, output=15.00),
    "claude-haiku-4-5": _P(input=1.00, cached_input=0.10, output=5.00),
    "claude-3-5-haiku": _P(input=0.80, cached_input=0.08, output=4.00),
    "claude-3-haiku": _P(input=0.25, cached_input=0.03, output=1.25),
    "claude-3-opus": _P(input=15.00, cached_input=1.50, output=75.00),
}
_GEMINI: dict[str, Price] = {
    "gemini-2.5-pro": _P(input=1.25, cached_input=0.125, output=10.00),
    "gemini-2.5-flash": _P(input=0.30, cached_input=0.03, output=2.50),
    "gemini-2.5-flash-lite": _P(input=0.10, cached_input=0.01, output=0.40),
    "gemini-2.0-flash": _P(input=0.10, cached_input=0.025, output=0.40),
    "gemini-2.0-flash-lite": _P(input=0.075, output=0.30),
    "gemini-embedding-001": _P(input=0.15),
}
PRICES: dict[str, dict[str, Price]] = {
    "openai": _OPENAI,
    "azure": {**_OPENAI, "gpt-35-turbo": _OPENAI["gpt-3.5-turbo"]},  # deployment = model name
    "anthropic": _ANTHROPIC,
    "gemini": _GEMINI,
    "mock": {},  # every mock-* model is free: handled in lookup()
}

# Snapshot suffixes that do not change the price: -2024-08-06, -20250929, -latest, -001.
_SUFFIX = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-latest|-\d{3})$")
_FREE = Price(input=0.0, cached_input=0.0, output=0.0)


class Cost(NamedTuple):
    """USD by token class."""

    input: float
    cached_input: float
    output: float

    @property
    def total(self) -> float:
        return self.input + self.cached_input + self.output


class Tokens(NamedTuple):
    """A ``Usage`` split into billable classes (see the module docstring)."""

    input: int
    cached_input: int
    output: int


def tokens_of(usage: Usage) -> Tokens:
    cached = 0
    details = usage.prompt_tokens_details
    if details and isinstance(details.get("cached_tokens"), int):
        cached = max(0, min(details["cached_tokens"], usage.prompt_tokens))
    return Tokens(max(0, usage.prompt_tokens - cached), cached, max(0, usage.completion_tokens))


def cost_usd(tokens: Tokens, price: Price) -> Cost:
    """USD for ``tokens`` at ``price`` (per million); cached input without its own
    price is charged as input."""
    cached_rate = price.input if price.cached_input is None else price.cached_input
    return Cost(
        tokens.input * price.input / 1_000_000,
        tokens.cached_input * cached_rate / 1_000_000,
        tokens.output * price.output / 1_000_000,
    )


@lru_cache(maxsize=4096)
def lookup(provider: str, model: str) -> Price | None:
    """The table's price for an upstream model, trying it as given, then without a
    ``models/`` prefix and snapshot suffixes; ``None`` when unknown."""
    if provider == "mock":
        return _FREE
    return _find(PRICES.get(provider), model)


def _find(table: dict[str, T] | None, model: str) -> T | None:
    if not table:
        return None
    name = model.lower().removeprefix("models/")
    while True:
        found = table.get(name)
        if found is not None:
            return found
        shorter = _SUFFIX.sub("", name)
        if shorter == name:
            return None
        name = shorter


# The most output tokens one request can produce (the providers' documented maximum
# output per request), for a request that sets no max_tokens: with the price, the
# most a request can cost (``gateway/tenants/budget.py``). Embeddings produce none.
_CAPS_OPENAI = {
    "gpt-5.4": 128_000, "gpt-5.4-mini": 128_000, "gpt-5.2": 128_000, "gpt-5": 128_000,
    "gpt-5-mini": 128_000, "gpt-5-nano": 128_000, "gpt-4.1": 32_768, "gpt-4.1-mini": 32_768,
    "gpt-4.1-nano": 32_768, "gpt-4o": 16_384, "gpt-4o-mini": 16_384, "o1": 100_000,
    "o3": 100_000, "o3-mini": 100_000, "o4-mini": 100_000, "gpt-3.5-turbo": 4_096,
}  # fmt: skip
OUTPUT_CAPS: dict[str, dict[str, int]] = {
    "openai": _CAPS_OPENAI,
    "azure": {**_CAPS_OPENAI, "gpt-35-turbo": 4_096},
    "anthropic": {
        "claude-opus-4-5": 64_000, "claude-opus-4-1": 32_000, "claude-opus-4": 32_000,
        "claude-opus-4-0": 32_000, "claude-sonnet-4-5": 64_000, "claude-sonnet-4": 64_000,
        "claude-sonnet-4-0": 64_000, "claude-3-7-sonnet": 64_000, "claude-3-5-sonnet": 8_192,
        "claude-haiku-4-5": 64_000, "claude-3-5-haiku": 8_192, "claude-3-haiku": 4_096,
        "claude-3-opus": 4_096,
    },
    "gemini": {
        "gemini-2.5-pro": 65_536, "gemini-2.5-flash": 65_536, "gemini-2.5-flash-lite": 65_536,
        "gemini-2.0-flash": 8_192, "gemini-2.0-flash-lite": 8_192,
    },
}  # fmt: skip


def output_cap(dep: Deployment) -> int | None:
    """The most output tokens one request to ``dep`` can produce; None when unknown."""
    if dep.mock is not None:
        return dep.mock.reply_tokens  # the mock's own maximum
    if dep.provider == "mock":
        return 16  # MockOptions' default reply
    return _find(OUTPUT_CAPS.get(dep.provider), dep.model)


def price_for(dep: Deployment) -> Price | None:
    """The config's ``price:`` for this deployment, else the table's."""
    return dep.price if dep.price is not None else lookup(dep.provider, dep.model)
