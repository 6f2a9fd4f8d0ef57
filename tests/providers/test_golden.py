"""Golden files for every translating provider: requests, answers, streams, errors.

One table of providers instead of the same four parametrized tests in each
provider's test module; checks live in ``golden.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.providers import golden as g

PROVIDERS = {
    "anthropic": ("claude-sonnet-4-5", "https://api.anthropic.com"),
    "azure": ("gpt4o-prod", "https://myres.openai.azure.com"),
    "gemini": ("gemini-2.0-flash", "https://generativelanguage.googleapis.com/v1beta"),
}
KINDS: dict[str, tuple[str, Callable[[str, Path, str, str], None]]] = {
    "request": ("json", g.check_request_case),
    "response": ("json", g.check_response_case),
    "stream": ("sse", g.check_stream_case),
    "error": ("json", g.check_error_case),
}
CASES = [
    pytest.param(provider, kind, path, id=f"{provider}-{path.stem}")
    for provider in PROVIDERS
    for kind, (ext, _check) in KINDS.items()
    for path in g.cases(provider, kind, ext)
]


@pytest.mark.parametrize(("provider", "kind", "path"), CASES)
def test_golden(provider: str, kind: str, path: Path) -> None:
    model, base = PROVIDERS[provider]
    KINDS[kind][1](provider, path, model, base)
