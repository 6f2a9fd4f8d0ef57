"""Endpoint parity: chat, embeddings and /v1/messages (and count_tokens where it
applies) run one pipeline, so they answer with the same headers, cache the same way,
refuse with the same 429 and move the same metrics. One gateway process over real
sockets; answers checked by the official openai and anthropic SDKs.

/v1/messages runs twice: against the Anthropic fake (the body passes through) and
against the OpenAI fake (translated both ways).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import GatewayFactory
from tests.endpoints import (
    CHAT,
    COUNT_TOKENS,
    EMBEDDINGS,
    MESSAGES,
    Endpoint,
    anthropic_sdk,
    gateway_env,
    openai_sdk,
)
from tests.harness import FakeUpstream, GatewayProc, metric_sum, wait_until

pytestmark = pytest.mark.e2e

KEY = "sk-parity-main"
TIGHT = {e: f"sk-parity-tight-{e}" for e in ("chat", "embeddings", "messages", "translated")}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


TIGHT_KEYS = "".join(
    f"  - {{name: tight-{n}, key_sha256: {sha(k)}, limits: {{rpm: 1, rpm_burst: 1}}}}\n"
    for n, k in TIGHT.items()
)
CONFIG = f"""\
models:
  - alias: p-chat
    cache: {{ttl: 60}}
    deployments: [{{provider: openai, model: fake-echo}}]
  - alias: p-embed
    cache: {{ttl: 60}}
    deployments: [{{provider: openai, model: fake-embed}}]
  - alias: p-claude
    cache: {{ttl: 60}}
    deployments: [{{provider: anthropic, model: claude-fake}}]
  - alias: p-translated
    cache: {{ttl: 60}}
    deployments: [{{provider: openai, model: fake-echo}}]
keys:
  - {{name: parity, key_sha256: {sha(KEY)}, limits: {{rpm: 100000, tpm: 100000000}}}}
{TIGHT_KEYS}"""


@dataclass(frozen=True)
class Case:
    """An endpoint with the alias it is called on."""

    id: str
    endpoint: Endpoint
    model: str
    provider: str

    def __str__(self) -> str:
        return self.id


CASES = [
    Case("chat", CHAT, "p-chat", "openai"),
    Case("embeddings", EMBEDDINGS, "p-embed", "openai"),
    Case("messages", MESSAGES, "p-claude", "anthropic"),
    Case("translated", MESSAGES, "p-translated", "openai"),
]
COUNT = Case("count_tokens", COUNT_TOKENS, "p-claude", "anthropic")
CACHED_STREAMS = [c for c in CASES if c.endpoint.streams]


@pytest.fixture(scope="module")
def gw(
    gateway_factory: GatewayFactory,
    tmp_path_factory: pytest.TempPathFactory,
    fake_upstream: FakeUpstream,
    anthropic_fake: Any,
) -> GatewayProc:
    config: Path = tmp_path_factory.mktemp("parity") / "parity.yaml"
    config.write_text(CONFIG)
    return gateway_factory(
        gateway_env(fake_upstream, anthropic_fake, config), name="gateway-parity"
    )


@pytest.fixture
def http(gw: GatewayProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=15) as c:
        yield c


@pytest.fixture
def oai(gw: GatewayProc) -> Iterator[openai.OpenAI]:
    with openai_sdk(gw, KEY) as c:
        yield c


@pytest.fixture
def claude(gw: GatewayProc) -> Iterator[anthropic.Anthropic]:
    with anthropic_sdk(gw, KEY) as c:
        yield c


def fresh() -> str:
    return f"parity {uuid.uuid4().hex[:12]}"


def post(http: httpx.Client, case: Case, text: str, key: str = KEY, **kw: Any) -> httpx.Response:
    body = case.endpoint.body(case.model, text, **kw)
    return http.post(case.endpoint.path, json=body, headers=case.endpoint.headers(key))


TIMING = re.compile(r"^gateway;dur=\d+\.\d{3}, upstream;dur=\d+\.\d{3}(, [a-z]+;dur=\d+\.\d{3})*$")
RATE_HEADERS = {
    f"x-ratelimit-{what}-{kind}"
    for what in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
}


# -- the same headers -------------------------------------------------------------------


@pytest.mark.parametrize("case", [*CASES, COUNT], ids=str)
def test_success_headers(http: httpx.Client, case: Case) -> None:
    r = post(http, case, fresh())
    assert r.status_code == 200, r.text
    h = r.headers
    assert re.fullmatch(r"[0-9a-f]{24}", h["x-request-id"])
    assert h["x-gateway-provider"] == case.provider
    assert h["x-gateway-attempts"] == "1"
    assert TIMING.match(h["server-timing"]), h["server-timing"]
    if case is COUNT:  # never cached, never rate limited
        assert "x-gateway-cache" not in h
        assert not RATE_HEADERS & set(h)
        return
    assert h["x-gateway-cache"] == "MISS"
    assert set(h) >= RATE_HEADERS
    assert h["x-ratelimit-limit-requests"] == "100000"


@pytest.mark.parametrize("case", CACHED_STREAMS, ids=str)
def test_streamed_success_headers(http: httpx.Client, case: Case) -> None:
    r = post(http, case, fresh(), stream=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-gateway-provider"] == case.provider
    assert r.headers["x-gateway-attempts"] == "1"
    assert r.headers["x-gateway-cache"] == "MISS"
    assert TIMING.match(r.headers["server-timing"])
    assert set(r.headers) >= RATE_HEADERS


# -- the same cache behaviour -----------------------------------------------------------


def chat_answer(oai: openai.OpenAI, model: str, text: str, stream: bool) -> tuple[str, str]:
    """(x-gateway-cache, the answer's text) through the openai SDK."""
    messages: Any = [{"role": "user", "content": text}]
    if not stream:
        raw = oai.chat.completions.with_raw_response.create(model=model, messages=messages)
        return raw.headers["x-gateway-cache"], raw.parse().choices[0].message.content or ""
    raw_stream = oai.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    parts, finish, usage = [], None, None
    for chunk in raw_stream.parse():
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert finish == "stop" and usage is not None and usage.completion_tokens > 0
    return raw_stream.headers["x-gateway-cache"], "".join(parts)


def message_answer(
    claude: anthropic.Anthropic, model: str, text: str, stream: bool
) -> tuple[str, str]:
    """(x-gateway-cache, the answer's text) through the anthropic SDK."""
    messages: Any = [{"role": "user", "content": text}]
    if not stream:
        raw = claude.messages.with_raw_response.create(
            model=model, max_tokens=32, messages=messages
        )
        message = raw.parse()
        headers = raw.headers
    else:
        with claude.messages.stream(model=model, max_tokens=32, messages=messages) as s:
            pieces = list(s.text_stream)
            message = s.get_final_message()
            headers = s.response.headers
        assert "".join(pieces) == message.content[0].text  # type: ignore[union-attr]
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    block = message.content[0]
    assert block.type == "text"
    return headers["x-gateway-cache"], block.text


@pytest.mark.parametrize("second", [False, True], ids=["then-plain", "then-stream"])
@pytest.mark.parametrize("first", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", CACHED_STREAMS, ids=str)
def test_a_repeated_request_is_a_hit_valid_for_the_official_sdk(
    oai: openai.OpenAI,
    claude: anthropic.Anthropic,
    fake_upstream: FakeUpstream,
    anthropic_fake: Any,
    case: Case,
    first: bool,
    second: bool,
) -> None:
    text = fresh()
    ask = chat_answer if case.endpoint is CHAT else message_answer
    client: Any = oai if case.endpoint is CHAT else claude
    status, answer = ask(client, case.model, text, first)
    assert status == "MISS"
    assert text in answer  # the fakes echo
    again, replayed = ask(client, case.model, text, second)
    assert again == "HIT"
    assert replayed == answer
    fake = anthropic_fake if case.provider == "anthropic" else fake_upstream
    sent = [r for r in fake.requests() if text in str(r["json"])]
    assert len(sent) == 1  # the second answer came from the cache


def test_a_repeated_embeddings_request_is_a_hit(
    oai: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    text = fresh()
    a = oai.embeddings.with_raw_response.create(model="p-embed", input=text)
    b = oai.embeddings.with_raw_response.create(model="p-embed", input=text)
    assert (a.headers["x-gateway-cache"], b.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert a.parse().data[0].embedding == b.parse().data[0].embedding
    assert len(fake_upstream.find(text, "/v1/embeddings")) == 1


# -- the same 429 -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_key_limit_is_the_same_429(gw: GatewayProc, http: httpx.Client, case: Case) -> None:
    key = TIGHT[case.id]
    before = metric_sum(gw.metrics(), "llm_rate_limit_exceeded_total", scope="key")
    assert post(http, case, fresh(), key=key).status_code == 200
    r = post(http, case, fresh(), key=key)
    assert r.status_code == 429
    error = case.endpoint.error(r)
    assert error["type"] == "rate_limit_error"
    if not case.endpoint.anthropic:
        assert error["code"] == "rate_limit_exceeded"
    h = r.headers
    assert int(h["retry-after"]) >= 1
    assert int(h["retry-after-ms"]) >= 1
    assert int(h["retry-after"]) * 1000 >= int(h["retry-after-ms"])
    assert h["x-ratelimit-limit-requests"] == "1"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in h
    assert re.fullmatch(r"[0-9a-f]{24}", h["x-request-id"])
    assert "x-gateway-provider" not in h  # nothing was sent upstream
    after = metric_sum(gw.metrics(), "llm_rate_limit_exceeded_total", scope="key")
    assert after - before == 1


def test_the_official_sdks_read_the_429(gw: GatewayProc) -> None:
    with openai_sdk(gw, TIGHT["chat"]) as c:
        with pytest.raises(openai.RateLimitError) as err:
            for _ in range(2):
                c.chat.completions.create(
                    model="p-chat", messages=[{"role": "user", "content": fresh()}]
                )
        assert err.value.code == "rate_limit_exceeded"
    with anthropic_sdk(gw, TIGHT["messages"]) as a:
        with pytest.raises(anthropic.RateLimitError) as aerr:
            for _ in range(2):
                a.messages.create(
                    model="p-claude", max_tokens=8, messages=[{"role": "user", "content": fresh()}]
                )
        assert aerr.value.status_code == 429


# -- the same metrics ---------------------------------------------------------------------


def counters(gw: GatewayProc, case: Case) -> tuple[float, float]:
    """(HTTP 200s on the endpoint's route, upstream successes of its alias)."""
    text = gw.metrics()
    http_ok = metric_sum(
        text, "http_requests_total", route=case.endpoint.path, status="200", method="POST"
    )
    upstream = metric_sum(
        text, "llm_provider_requests_total", provider=case.provider, model=case.model,
        outcome="success",
    )  # fmt: skip
    return http_ok, upstream


def moved(gw: GatewayProc, case: Case, since: tuple[float, float]) -> tuple[float, float]:
    """How far the counters moved, once they settle (the edge counts a request after its
    last byte went out, so just after the client has it)."""
    seen: list[tuple[float, float]] = []

    def still() -> bool:
        now = counters(gw, case)
        seen.append((now[0] - since[0], now[1] - since[1]))
        return len(seen) > 1 and seen[-1] == seen[-2] and seen[-1][0] > 0

    wait_until(still, timeout=5, interval=0.1)
    return seen[-1]


@pytest.mark.parametrize(
    ("case", "stream"),
    [(c, s) for c in (*CASES, COUNT) for s in ((False, True) if c.endpoint.streams else (False,))],
    ids=lambda v: str(v) if isinstance(v, Case) else ("stream" if v else "plain"),
)
def test_metrics_move_the_same_way(
    gw: GatewayProc, http: httpx.Client, case: Case, stream: bool
) -> None:
    text = fresh()
    before = counters(gw, case)
    assert post(http, case, text, stream=stream).status_code == 200
    assert moved(gw, case, before) == (1, 1)  # served, and sent upstream
    if case is COUNT:
        return
    after_miss = counters(gw, case)
    assert post(http, case, text, stream=stream).headers["x-gateway-cache"] == "HIT"
    assert moved(gw, case, after_miss) == (1, 0)  # served, not sent upstream
