"""The cache end to end: real gateway processes (``python -m gateway serve``) over real
sockets, driven by the openai SDK; one alone (memory backend), two sharing a
redis-server, and ones whose Redis is unreachable or killed mid-run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cache.helpers import marker
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import TOOL_ARGUMENTS, TOOL_NAME
from tests.harness import PROVIDER_KEY, FakeUpstream, GatewayProc, closed_port, metric_sum
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e


def gateway_env(config: Path, fake: FakeUpstream, redis_url: str | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_BASE_URL": fake.url,
        "GATEWAY_CONFIG": str(config),
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


@pytest.fixture(scope="module")
def memory_gateway(
    gateway_factory: GatewayFactory, cache_config: Path, fake_upstream: FakeUpstream
) -> GatewayProc:
    return gateway_factory(gateway_env(cache_config, fake_upstream), name="gw-cache-memory")


@pytest.fixture(scope="module")
def redis_gateways(
    gateway_factory: GatewayFactory,
    cache_config: Path,
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,
) -> tuple[GatewayProc, GatewayProc]:
    env = gateway_env(cache_config, fake_upstream, redis_server.url)
    return (
        gateway_factory(env, name="gw-cache-redis-a"),
        gateway_factory(env, name="gw-cache-redis-b"),
    )


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def gateway(request: pytest.FixtureRequest) -> Iterator[GatewayProc]:
    if request.param == "memory":
        yield request.getfixturevalue("memory_gateway")
    else:
        yield request.getfixturevalue("redis_gateways")[0]


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def collect(stream: Any) -> dict[str, Any]:
    """Content, tool calls and finish reason from an SDK chunk stream."""
    content, finish, usage = "", None, None
    tools: dict[int, dict[str, str]] = {}
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for tc in ch.delta.tool_calls or []:
                t = tools.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                t["id"] += tc.id or ""
                t["name"] += (tc.function and tc.function.name) or ""
                t["arguments"] += (tc.function and tc.function.arguments) or ""
            finish = ch.finish_reason or finish
    return {"content": content, "tools": list(tools.values()), "finish": finish, "usage": usage}


# -- one gateway -----------------------------------------------------------------------


def test_sdk_plain_miss_then_hit(gateway: GatewayProc, fake_upstream: FakeUpstream) -> None:
    m = marker()
    with gateway.openai() as client:
        a = client.chat.completions.with_raw_response.create(model="cached", messages=user(m))
        b = client.chat.completions.with_raw_response.create(model="cached", messages=user(m))
    assert a.headers["x-gateway-cache"] == "MISS" and b.headers["x-gateway-cache"] == "HIT"
    assert b.headers["x-gateway-provider"] == "openai"
    assert b.parse().choices[0].message.content == a.parse().choices[0].message.content == m
    assert len(fake_upstream.find(m)) == 1


@pytest.mark.parametrize("model", ["cached", "cached-tools"])
def test_sdk_stream_replay_equals_the_original(
    gateway: GatewayProc, fake_upstream: FakeUpstream, model: str
) -> None:
    m = marker()
    kw: dict[str, Any] = {"model": model, "messages": user(m), "stream": True}
    if model == "cached-tools":
        kw["tools"] = TOOLS
    with gateway.openai() as client:
        first = client.chat.completions.with_raw_response.create(**kw)
        original = collect(first.parse())
        second = client.chat.completions.with_raw_response.create(**kw)
        replay = collect(second.parse())
        # the SDK's own accumulator accepts the replay as a whole completion
        with client.chat.completions.stream(
            **{k: v for k, v in kw.items() if k != "stream"}
        ) as helper:
            final = helper.get_final_completion()
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert replay == original
    if model == "cached":
        assert replay["content"] == m
        assert final.choices[0].message.content == m
    else:
        assert replay["tools"][0]["arguments"] == TOOL_ARGUMENTS
        call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.arguments == TOOL_ARGUMENTS  # type: ignore[union-attr]
    assert len(fake_upstream.find(m)) == 1


def test_sdk_plain_answer_serves_a_stream_with_usage(
    gateway: GatewayProc, fake_upstream: FakeUpstream
) -> None:
    m = marker()
    with gateway.openai() as client:
        plain = client.chat.completions.create(model="cached", messages=user(m))
        raw = client.chat.completions.with_raw_response.create(
            model="cached",
            messages=user(m),
            stream=True,
            stream_options={"include_usage": True},
        )
        got = collect(raw.parse())
    assert raw.headers["x-gateway-cache"] == "HIT"
    assert got["content"] == plain.choices[0].message.content
    assert plain.usage is not None
    assert got["usage"]["total_tokens"] == plain.usage.total_tokens
    assert len(fake_upstream.find(m)) == 1


def test_metrics_count_this_miss_and_this_hit(gateway: GatewayProc) -> None:
    """One miss then one hit move the counters by exactly one each, and the tokens the
    hit saved are the usage of the answer it replayed."""

    def counts() -> tuple[float, ...]:
        text = gateway.metrics()
        return tuple(
            metric_sum(text, name, model="cached", **label)
            for name, label in (
                ("llm_cache_requests_total", {"result": "hit"}),
                ("llm_cache_requests_total", {"result": "miss"}),
                ("llm_cache_tokens_saved_total", {"kind": "prompt"}),
                ("llm_cache_tokens_saved_total", {"kind": "completion"}),
            )
        )

    m = marker()
    before = counts()
    with gateway.openai() as client:
        first = client.chat.completions.create(model="cached", messages=user(m))
        client.chat.completions.create(model="cached", messages=user(m))
    after = counts()
    assert first.usage is not None
    delta = tuple(b - a for a, b in zip(before, after, strict=True))
    assert delta == (1, 1, first.usage.prompt_tokens, first.usage.completion_tokens)


# -- two gateways sharing Redis --------------------------------------------------------


def mock_calls(*gws: GatewayProc) -> float:
    return sum(
        metric_sum(
            g.metrics(),
            "llm_provider_requests_total",
            provider="mock",
            model="cached-slow",
            outcome="success",
        )
        for g in gws
    )


@pytest.mark.redis
def test_entries_are_shared_across_gateways(
    redis_gateways: tuple[GatewayProc, GatewayProc], fake_upstream: FakeUpstream
) -> None:
    a, b = redis_gateways
    m = marker()
    with a.openai() as ca, b.openai() as cb:
        first = ca.chat.completions.with_raw_response.create(model="cached", messages=user(m))
        second = cb.chat.completions.with_raw_response.create(
            model="cached", messages=user(m), stream=True
        )
        replay = collect(second.parse())
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert replay["content"] == m
    assert len(fake_upstream.find(m)) == 1


@pytest.mark.redis
def test_single_flight_across_two_gateway_processes(
    redis_gateways: tuple[GatewayProc, GatewayProc],
) -> None:
    """8 identical requests at once, 4 to each process: one upstream call (mock, 300 ms)."""
    gws = redis_gateways
    n = 8
    m = marker()
    before = mock_calls(*gws)
    barrier = threading.Barrier(n)
    results: list[httpx.Response | BaseException] = [RuntimeError("not run")] * n

    def run(i: int) -> None:
        gw = gws[i % 2]
        body = {"model": "cached-slow", "messages": user(m), "stream": i % 4 == 1}
        try:
            with httpx.Client(base_url=gw.url, timeout=10) as c:
                barrier.wait(5)
                r = c.post("/v1/chat/completions", json=body)
                r.read()
                results[i] = r
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    responses = [r for r in results if isinstance(r, httpx.Response)]
    assert len(responses) == n, results
    assert all(r.status_code == 200 for r in responses)
    assert sorted(r.headers["x-gateway-cache"] for r in responses) == ["HIT"] * (n - 1) + ["MISS"]
    assert mock_calls(*gws) - before == 1


# -- Redis unreachable, or killed mid-run ----------------------------------------------


def test_gateway_with_unreachable_redis_bypasses(
    gateway_factory: GatewayFactory, cache_config: Path, fake_upstream: FakeUpstream
) -> None:
    env = gateway_env(cache_config, fake_upstream, f"redis://127.0.0.1:{closed_port()}/0")
    gw = gateway_factory(env, name="gw-cache-noredis", ready_path="/health/live")
    m = marker()
    try:
        with gw.openai() as client:
            for _ in range(3):
                raw = client.chat.completions.with_raw_response.create(
                    model="cached", messages=user(m)
                )
                assert raw.headers["x-gateway-cache"] == "BYPASS"
                assert raw.parse().choices[0].message.content == m
        assert len(fake_upstream.find(m)) == 3
        assert metric_sum(gw.metrics(), "llm_cache_errors_total", op="lookup") >= 1
    finally:
        gw.stop()


@pytest.mark.redis
def test_redis_killed_mid_run_then_restarted(
    gateway_factory: GatewayFactory,
    cache_config: Path,
    fake_upstream: FakeUpstream,
    own_redis: RedisServer,
) -> None:
    env = gateway_env(cache_config, fake_upstream, own_redis.url)
    gw = gateway_factory(env, name="gw-cache-kill")
    m = marker()
    try:
        with httpx.Client(base_url=gw.url, timeout=5) as c:

            def status(**kw: Any) -> str:
                body = {"model": "cached", "messages": user(m), **kw}
                r = c.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                return str(r.headers["x-gateway-cache"])

            assert [status(), status()] == ["MISS", "HIT"]
            own_redis.stop()
            assert [status(), status(stream=True), status()] == ["BYPASS"] * 3
            own_redis.restart()  # a fresh, empty server on the same port
            time.sleep(0.6)  # the cool-down after the last failure
            assert [status(), status()] == ["MISS", "HIT"]  # back on Redis by itself
    finally:
        gw.stop()
