"""The pipeline endpoints as test parameters: one request body, auth header and error
shape per endpoint, so a test written once runs against every endpoint (the plugin
contract in ``tests/plugins``, the parity tests in ``tests/e2e/test_parity.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.harness import PROVIDER_KEY

if TYPE_CHECKING:
    import anthropic
    import openai

    from tests.harness import FakeUpstream, GatewayProc

__all__ = [
    "CHAT",
    "COUNT_TOKENS",
    "EMBEDDINGS",
    "ENDPOINTS",
    "MESSAGES",
    "Endpoint",
    "anthropic_sdk",
    "gateway_env",
    "openai_sdk",
]

ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    anthropic: bool  # Anthropic's error shape and x-api-key; else OpenAI's and Bearer
    streams: bool = False

    def __str__(self) -> str:  # test ids
        return self.name

    def body(self, model: str, text: str, *, stream: bool = False) -> dict[str, Any]:
        if self.name == "embeddings":
            return {"model": model, "input": text}
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if self.name == "messages":
            body["max_tokens"] = 32
        if stream:
            body["stream"] = True
        return body

    def headers(self, key: str) -> dict[str, str]:
        if self.anthropic:
            return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        return {"authorization": f"Bearer {key}"}

    def error(self, r: httpx.Response) -> dict[str, Any]:
        """The error of a response, asserted to have this endpoint's shape; as
        ``{"type", "message"}`` (plus ``param`` and ``code`` for OpenAI's)."""
        assert r.headers["content-type"].startswith("application/json"), r.headers
        body = r.json()
        if self.anthropic:
            assert set(body) == {"type", "error"}, body
            assert body["type"] == "error"
            assert set(body["error"]) == {"type", "message"}, body
            return dict(body["error"])
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        return dict(body["error"])


CHAT = Endpoint("chat", "/v1/chat/completions", anthropic=False, streams=True)
EMBEDDINGS = Endpoint("embeddings", "/v1/embeddings", anthropic=False)
MESSAGES = Endpoint("messages", "/v1/messages", anthropic=True, streams=True)
COUNT_TOKENS = Endpoint("count_tokens", "/v1/messages/count_tokens", anthropic=True)
ENDPOINTS = (CHAT, EMBEDDINGS, MESSAGES, COUNT_TOKENS)


def gateway_env(openai_fake: FakeUpstream, anthropic_fake: Any, config: Path) -> dict[str, str]:
    """A gateway's environment for the two fakes (OpenAI and Anthropic) and ``config``."""
    from tests.providers.conftest import KEYS

    return {
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_BASE_URL": openai_fake.url,
        "ANTHROPIC_API_KEY": KEYS["anthropic"],
        "ANTHROPIC_BASE_URL": anthropic_fake.root,
        "GATEWAY_CONFIG": str(config),
    }


def openai_sdk(gw: GatewayProc, key: str) -> openai.OpenAI:
    import openai

    return openai.OpenAI(base_url=gw.api, api_key=key, max_retries=0, timeout=15)


def anthropic_sdk(gw: GatewayProc, key: str) -> anthropic.Anthropic:
    import anthropic

    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=15)
