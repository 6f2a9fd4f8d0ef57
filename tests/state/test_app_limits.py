"""Auth and rate limits through the in-process app (Litestar's TestClient, the mock
provider, the memory backend unless a test says otherwise): 401/403, the 429 shape and
headers, every scope, settle, open mode, and the Redis-down policies."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import parse_config
from gateway.errors import RateLimited
from gateway.pipeline.auth import Keyring
from gateway.pipeline.ratelimit import Limiter, duration
from gateway.providers.registry import Registry
from gateway.settings import Settings
from gateway.store.base import StateUnavailable
from gateway.store.memory import MemoryBackend
from gateway.telemetry import metrics
from tests.contexts import context_for
from tests.harness import closed_port

URL = "/v1/chat/completions"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def chat(model: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


AppFactory = Callable[..., TestClient[Any]]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    """``make_app(yaml_text, **env)``: a started TestClient on that config."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    clients: list[TestClient[Any]] = []

    def make(config: str, **env: str) -> TestClient[Any]:
        path = tmp_path / f"gw{len(clients)}.yaml"
        path.write_text(config)
        app = create_app(Settings.from_env({"GATEWAY_CONFIG": str(path), **env}))
        client = TestClient(app, raise_server_exceptions=True)
        client.__enter__()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for c in clients:
            c.__exit__(None, None, None)
        root.handlers[:] = handlers
        root.setLevel(level)


KEYS_CONFIG = f"""
models:
  - alias: free
    deployments: [{{provider: mock, model: mock-1, mock: {{reply_tokens: 8}}}}]
  - alias: other
    deployments: [{{provider: mock, model: mock-1}}]
keys:
  - {{name: alice, key_sha256: {sha("sk-alice-secret")}, limits: {{rpm: 3}}}}
  - {{name: bob, key_sha256: {sha("sk-bob-secret").upper()}, models: [free, mock/mock-1]}}
limits:
  default_key: {{rpm: 1000, tpm: 5000}}
  default_max_tokens: 50
"""


def assert_error(r: httpx.Response, status: int, type_: str, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == (type_, code), err
    return err  # type: ignore[no-any-return]


def test_missing_and_unknown_keys_are_401_without_echo(make_app: AppFactory) -> None:
    c = make_app(KEYS_CONFIG)
    assert_error(c.post(URL, json=chat("free")), 401, "authentication_error", "invalid_api_key")
    r = c.post(URL, json=chat("free"), headers=bearer("sk-wrong-guess-123"))
    assert_error(r, 401, "authentication_error", "invalid_api_key")
    assert "sk-wrong-guess" not in r.text and "sk-" not in r.text
    r = c.post(URL, json=chat("free"), headers={"authorization": "Basic c2stYWxpY2U="})
    assert r.status_code == 401
    assert c.post(URL, json=chat("free"), headers=bearer("sk-alice-secret")).status_code == 200
    # Anthropic clients send x-api-key
    assert c.post(URL, json=chat("free"), headers={"x-api-key": "sk-bob-secret"}).status_code == 200


def test_key_model_allow_list(make_app: AppFactory) -> None:
    c = make_app(KEYS_CONFIG)
    h = bearer("sk-bob-secret")
    assert c.post(URL, json=chat("free"), headers=h).status_code == 200
    assert c.post(URL, json=chat("mock/mock-1"), headers=h).status_code == 200
    assert c.post(URL, json=chat("mock-1"), headers=h).status_code == 200  # resolves to mock/mock-1
    err = assert_error(
        c.post(URL, json=chat("other"), headers=h), 403, "permission_error", "model_not_allowed"
    )
    assert err["param"] == "model"


def test_per_key_override_and_429_shape(make_app: AppFactory) -> None:
    c = make_app(KEYS_CONFIG)
    before = metrics.llm_rate_limit_exceeded_total.labels("key")._value.get()
    h = bearer("sk-alice-secret")
    for i in range(3):
        r = c.post(URL, json=chat("free"), headers=h)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert r.headers["x-ratelimit-limit-tokens"] == "5000"  # default_key's, field by field
        assert "ratelimit;dur=" in r.headers["server-timing"]
    r = c.post(URL, json=chat("free"), headers=h)
    err = assert_error(r, 429, "rate_limit_error", "rate_limit_exceeded")
    assert "this API key" in err["message"] and "3 requests per minute" in err["message"]
    assert "alice" not in err["message"] and "sk-" not in r.text
    # 3 per minute: one every 20 s
    assert 19 <= int(r.headers["retry-after"]) <= 20
    assert 19_000 < int(r.headers["retry-after-ms"]) <= 20_000
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    assert metrics.llm_rate_limit_exceeded_total.labels("key")._value.get() == before + 1
    # bob is another tenant: unaffected
    assert c.post(URL, json=chat("free"), headers=bearer("sk-bob-secret")).status_code == 200


def test_tokens_reserved_then_settled_to_usage(make_app: AppFactory) -> None:
    c = make_app(KEYS_CONFIG)
    h = bearer("sk-bob-secret")
    r = c.post(URL, json=chat("free", max_tokens=40), headers=h)
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 8  # reply_tokens: 8
    # reserved prompt + 40 at admission; the headers show the bucket after that
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == 5000 - usage["prompt_tokens"] - 40
    # settled to the real usage: the next request sees the 32 unused tokens back
    r2 = c.post(URL, json=chat("free", max_tokens=40), headers=h)
    want = 5000 - usage["total_tokens"] - (usage["prompt_tokens"] + 40)
    assert abs(int(r2.headers["x-ratelimit-remaining-tokens"]) - want) <= 1  # + refill


def test_stream_carries_headers_and_settles(make_app: AppFactory) -> None:
    c = make_app(KEYS_CONFIG)
    h = bearer("sk-bob-secret")
    body = chat("free", stream=True, stream_options={"include_usage": True})
    with c.stream("POST", URL, json=body, headers=h) as r:
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-tokens"] == "5000"
        first = int(r.headers["x-ratelimit-remaining-tokens"])
        text = "".join(r.iter_text())
    assert '"usage"' in text
    r2 = c.post(URL, json=chat("free", max_tokens=1), headers=h)
    # the stream reserved prompt + 50 (default_max_tokens) and used prompt + 8: 42 back
    assert int(r2.headers["x-ratelimit-remaining-tokens"]) >= first + 42 - 20


SCOPES_CONFIG = """
models:
  - alias: tiny
    limits: {rpm: 2}
    deployments: [{provider: mock, model: mock-1}]
  - alias: dep
    deployments:
      - {provider: mock, model: mock-1, limits: {rpm: 2}}
  - alias: dep2
    deployments:
      - {provider: mock, model: mock-1, limits: {rpm: 2}}
  - alias: small
    limits: {tpm: 100}
    deployments: [{provider: mock, model: mock-1}]
"""


@pytest.mark.parametrize(
    ("alias", "scope", "words"),
    [("tiny", "model", "model 'tiny'"), ("dep", "deployment", "the deployment of 'dep'")],
)
def test_model_and_deployment_scopes(
    make_app: AppFactory, alias: str, scope: str, words: str
) -> None:
    c = make_app(SCOPES_CONFIG)
    before = metrics.llm_rate_limit_exceeded_total.labels(scope)._value.get()
    assert [c.post(URL, json=chat(alias)).status_code for _ in range(2)] == [200, 200]
    err = assert_error(
        c.post(URL, json=chat(alias)), 429, "rate_limit_error", "rate_limit_exceeded"
    )
    assert words in err["message"]
    assert metrics.llm_rate_limit_exceeded_total.labels(scope)._value.get() == before + 1


def test_one_deployment_quota_across_aliases(make_app: AppFactory) -> None:
    c = make_app(SCOPES_CONFIG)
    assert c.post(URL, json=chat("dep")).status_code == 200
    assert c.post(URL, json=chat("dep2")).status_code == 200
    assert c.post(URL, json=chat("dep")).status_code == 429  # the same upstream quota


def test_all_or_nothing_and_too_large(make_app: AppFactory) -> None:
    c = make_app(SCOPES_CONFIG)
    # 100 tokens per minute: prompt + max_tokens 80 fits once, not twice
    assert c.post(URL, json=chat("small", max_tokens=80)).status_code == 200
    r = c.post(URL, json=chat("small", max_tokens=80))
    assert r.status_code == 429 and "tokens per minute" in r.json()["error"]["message"]
    r = c.post(URL, json=chat("small", "word " * 200, max_tokens=1))
    err = assert_error(r, 429, "rate_limit_error", "rate_limit_exceeded")
    assert err["message"].startswith("Request too large")


def test_open_mode_limits_each_presented_key(make_app: AppFactory) -> None:
    c = make_app("limits: {default_key: {rpm: 2}}\n")
    for key in ("sk-one", "sk-two"):
        codes = [
            c.post(URL, json=chat("mock-1"), headers=bearer(key)).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429], key
    codes = [c.post(URL, json=chat("mock-1")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # anonymous is one tenant


def test_embeddings_are_limited_by_tokens(make_app: AppFactory) -> None:
    c = make_app("limits: {default_key: {tpm: 30}}\n")
    body = {"model": "mock-embedding", "input": "one two three four five six seven eight nine"}
    assert c.post("/v1/embeddings", json=body).status_code == 200
    assert c.post("/v1/embeddings", json=body).status_code == 200
    r = c.post("/v1/embeddings", json=body)
    assert r.status_code == 429 and r.headers["x-ratelimit-limit-tokens"] == "30"


def test_no_limits_no_headers(make_app: AppFactory) -> None:
    c = make_app("models: []\n")
    r = c.post(URL, json=chat("mock-1"))
    assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers


def test_openai_sdk_raises_rate_limit_error(make_app: AppFactory) -> None:
    c = make_app("limits: {default_key: {rpm: 1}}\n")
    sdk = openai.OpenAI(
        base_url="http://testserver.local/v1", api_key="sk-x", http_client=c, max_retries=0
    )
    raw = sdk.chat.completions.with_raw_response.create(
        model="mock-1", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert 59 <= int(info.value.response.headers["retry-after"]) <= 60


LOCAL_CONFIG = """
limits:
  default_key: {rpm: 10}
  on_redis_error: POLICY
"""


def test_redis_down_fails_open_to_local_share(make_app: AppFactory) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    c = make_app(LOCAL_CONFIG.replace("POLICY", "open"), REDIS_URL=url)
    before = metrics.gateway_state_fallbacks_total.labels("down")._value.get()
    codes = [c.post(URL, json=chat("mock-1")).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]  # 0.34 of 10
    assert metrics.gateway_state_fallbacks_total.labels("down")._value.get() >= before + 5
    h = c.get("/health").json()
    assert (h["status"], h["rate_limits"]) == ("degraded", "local-fallback")


def test_redis_down_fails_closed_with_503(make_app: AppFactory) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    c = make_app(LOCAL_CONFIG.replace("POLICY", "closed"), REDIS_URL=url)
    r = c.post(URL, json=chat("mock-1"))
    assert_error(r, 503, "service_unavailable", "rate_limiter_unavailable")
    assert r.headers["retry-after"] == "1"
    assert c.get("/health").json()["rate_limits"] == "closed-503"


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (120_000, "120ms"),
        (999_001, "1s"),
        (1_000_000, "1s"),
        (1_500_000, "1.5s"),
        (7_660_000, "7.66s"),
        (360_000_000, "6m0s"),
        (3_723_000_000, "1h2m3s"),
    ],
)
def test_reset_duration_format(us: int, text: str) -> None:
    assert duration(us) == text


class _FlakyStore:
    """Answers like Redis for ``ok_calls`` reservations, then fails like a dead one."""

    kind = "redis"
    shared = True
    healthy = True

    def __init__(self, ok_calls: int) -> None:
        self.inner = MemoryBackend()
        self.ok_calls = ok_calls

    async def reserve(self, buckets: Any, amounts: Any, *, now_us: int | None = None) -> Any:
        if self.ok_calls <= 0:
            raise StateUnavailable("timeout")
        self.ok_calls -= 1
        return await self.inner.reserve(buckets, amounts)


def test_fallback_starts_from_this_replicas_recent_use() -> None:
    config = parse_config({"limits": {"default_key": {"rpm": 10}}})
    settings = Settings(config=config, providers=Settings.from_env({}).providers)
    registry = Registry(settings)
    group = registry.resolve("mock-1")
    principal = Keyring(config).principal({})

    async def run() -> list[int]:
        limiter = Limiter(config, registry, _FlakyStore(ok_calls=2))  # type: ignore[arg-type]
        codes = []
        for _ in range(4):
            try:
                ctx = context_for(
                    chat("mock-1"), principal=principal, group=group, dep=group.deployments[0]
                )
                await limiter.reserve(ctx)
                codes.append(200)
            except RateLimited:
                codes.append(429)
        return codes

    # local share: 0.34 of 10 = 3; two already admitted through "Redis" leave one
    assert asyncio.run(run()) == [200, 200, 200, 429]
