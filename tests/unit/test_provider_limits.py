"""Providers' own rate-limit headers are kept as gauges, whatever the status."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
from prometheus_client import REGISTRY

from gateway.pipeline.relay import record_provider_limits


def _value(provider: str, model: str, kind: str) -> float | None:
    return REGISTRY.get_sample_value(
        "llm_provider_ratelimit_remaining",
        {"provider": provider, "model": model, "kind": kind},
    )


def test_openai_headers() -> None:
    dep = SimpleNamespace(provider="openai", label="limits-test-openai")
    record_provider_limits(
        dep,  # type: ignore[arg-type]
        httpx.Headers(
            {"x-ratelimit-remaining-requests": "41", "x-ratelimit-remaining-tokens": "9000"}
        ),
    )
    assert _value("openai", "limits-test-openai", "requests") == 41
    assert _value("openai", "limits-test-openai", "tokens") == 9000


def test_anthropic_headers_and_garbage() -> None:
    dep = SimpleNamespace(provider="anthropic", label="limits-test-anthropic")
    record_provider_limits(
        dep,  # type: ignore[arg-type]
        httpx.Headers(
            {
                "anthropic-ratelimit-requests-remaining": "3",
                "anthropic-ratelimit-output-tokens-remaining": "not-a-number",
            }
        ),
    )
    assert _value("anthropic", "limits-test-anthropic", "requests") == 3
    assert _value("anthropic", "limits-test-anthropic", "output_tokens") is None


def test_no_headers_records_nothing() -> None:
    dep = SimpleNamespace(provider="gemini", label="limits-test-gemini")
    record_provider_limits(dep, httpx.Headers({}))  # type: ignore[arg-type]
    assert _value("gemini", "limits-test-gemini", "requests") is None
