"""The response cache through the whole app (``create_app`` in-process, upstreams over
real sockets: the fake OpenAI upstream, or the mock provider), on both backends.

Upstream calls are counted on the fake upstream's request log (every test uses a
unique marker in its prompt) or, for the mock provider, with
``llm_provider_requests_total``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from _speedups.cachekey import cache_key
from tests.cache.conftest import app_client, app_env
from tests.cache.helpers import assemble, chat, from_completion, marker, sse_chunks
from tests.harness import FakeUpstream
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
URL = "/v1/chat/completions"


async def post(c: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await c.post(
        URL, json=body, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )


def provider_calls(provider: str, model: str) -> float:
    labels = {"provider": provider, "model": model, "outcome": "success"}
    return REGISTRY.get_sample_value("llm_provider_requests_total", labels) or 0.0


def cache_metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- hits, misses, bypass --------------------------------------------------------------


async def test_miss_then_hit(env: dict[str, str], fake_upstream: FakeUpstream) -> None:
    m = marker()
    hits_before = cache_metric("llm_cache_requests_total", model="cached", result="hit")
    async with app_client(env) as c:
        first = await post(c, chat("cached", m, temperature=0))
        second = await post(c, chat("cached", m, temperature=0))
    assert first.status_code == second.status_code == 200
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert first.content == second.content
    assert second.json()["choices"][0]["message"]["content"] == m
    # the hit names the provider that produced the answer and says what the cache took
    assert second.headers["x-gateway-provider"] == "openai"
    assert "cache;dur=" in second.headers["server-timing"]
    assert "cache;dur=" in first.headers["server-timing"]
    assert len(fake_upstream.find(m)) == 1
    assert cache_metric("llm_cache_requests_total", model="cached", result="hit") == hits_before + 1


async def test_different_requests_do_not_share(
    env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    m = marker()
    async with app_client(env) as c:
        a = await post(c, chat("cached", m, temperature=0))
        b = await post(c, chat("cached", m, temperature=1))
        s = await post(c, chat("cached", m, temperature=0, user="someone-else"))
    assert [a.headers["x-gateway-cache"], b.headers["x-gateway-cache"]] == ["MISS", "MISS"]
    assert s.headers["x-gateway-cache"] == "HIT"  # `user` is not part of the key
    assert len(fake_upstream.find(m)) == 2


async def test_alias_without_cache_bypasses(
    env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    m = marker()
    async with app_client(env) as c:
        rs = [await post(c, chat("uncached", m)) for _ in range(2)]
        adhoc = await post(c, chat("openai/fake-echo", m))
    assert [r.headers["x-gateway-cache"] for r in rs] == ["BYPASS", "BYPASS"]
    assert adhoc.headers["x-gateway-cache"] == "BYPASS"
    assert len(fake_upstream.find(m)) == 3


async def test_ttl_expiry(env: dict[str, str], fake_upstream: FakeUpstream) -> None:
    m = marker()
    async with app_client(env) as c:
        a = await post(c, chat("short", m))  # alias TTL: 1 s
        b = await post(c, chat("short", m))
        await asyncio.sleep(1.2)
        d = await post(c, chat("short", m))
    assert [r.headers["x-gateway-cache"] for r in (a, b, d)] == ["MISS", "HIT", "MISS"]
    assert len(fake_upstream.find(m)) == 2


async def test_ttl_header_overrides_alias_ttl(
    env: dict[str, str], backend: str, fake_upstream: FakeUpstream, request: Any
) -> None:
    m = marker()
    body = chat("cached", m)  # alias TTL: 60 s
    async with app_client(env) as c:
        a = await post(c, body, x_gateway_cache_ttl="1")
        if backend == "redis":
            assert _raw_entry(request, body) is not None  # the store lands (lazily)
            digest = cache_key("anonymous", "chat", body)
            with request.getfixturevalue("redis_server").client() as r:
                pttl = r.pttl(f"gw:{{anonymous}}:cache:{digest}")
            assert 0 < pttl <= 1000
        b = await post(c, body)
        await asyncio.sleep(1.2)
        d = await post(c, body)
    assert [r.headers["x-gateway-cache"] for r in (a, b, d)] == ["MISS", "HIT", "MISS"]
    assert len(fake_upstream.find(m)) == 2


@pytest.mark.parametrize("value", ["0", "86401", "abc", "-5", "1.5", "", "1e3", "9" * 40])
@pytest.mark.parametrize("model", ["cached", "uncached"])
async def test_bad_ttl_header_is_a_400_naming_it(
    env: dict[str, str], value: str, model: str, backend: str
) -> None:
    if backend == "redis" and model == "uncached":
        pytest.skip("same code path as memory")
    async with app_client(env) as c:
        r = await post(c, chat(model, marker()), x_gateway_cache_ttl=value)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "x-gateway-cache-ttl" in err["message"]
    assert err["param"] == "x-gateway-cache-ttl"
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("value", ["1", "86400", " 30 "])
async def test_good_ttl_header_values(env: dict[str, str], value: str) -> None:
    async with app_client(env) as c:
        r = await post(c, chat("cached", marker()), x_gateway_cache_ttl=value)
    assert r.status_code == 200 and r.headers["x-gateway-cache"] == "MISS"


# -- Cache-Control ---------------------------------------------------------------------


async def test_no_cache_skips_the_lookup_but_stores(
    env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    m = marker()
    async with app_client(env) as c:
        fresh = await post(c, chat("cached", m), cache_control="no-cache")
        hit = await post(c, chat("cached", m))
        again = await post(c, chat("cached", m), cache_control="No-Cache, max-age=0")
    assert fresh.headers["x-gateway-cache"] == "MISS"
    assert hit.headers["x-gateway-cache"] == "HIT"  # no-cache still stored
    assert again.headers["x-gateway-cache"] == "MISS"  # the entry was there; not read
    assert len(fake_upstream.find(m)) == 2


async def test_no_store_skips_the_store_but_reads(
    env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    m = marker()
    async with app_client(env) as c:
        a = await post(c, chat("cached", m), cache_control="no-store")
        b = await post(c, chat("cached", m))  # nothing stored: a miss, stored now
        d = await post(c, chat("cached", m), cache_control="no-store")  # reads
    assert [r.headers["x-gateway-cache"] for r in (a, b, d)] == ["MISS", "MISS", "HIT"]
    assert len(fake_upstream.find(m)) == 2


async def test_no_cache_and_no_store_bypass(
    env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    m = marker()
    async with app_client(env) as c:
        await post(c, chat("cached", m))
        r = await post(c, chat("cached", m), cache_control="no-store, no-cache")
    assert r.headers["x-gateway-cache"] == "BYPASS"
    assert len(fake_upstream.find(m)) == 2


# -- streams ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["cached", "cached-tools"])
@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_replay_equals_the_original_stream(
    env: dict[str, str], fake_upstream: FakeUpstream, model: str, include_usage: bool
) -> None:
    m = marker()
    body = chat(model, m, stream=True, stream_options={"include_usage": include_usage})
    async with app_client(env) as c:
        first = await post(c, body)
        second = await post(c, body)
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.headers["x-gateway-provider"] == "openai"
    original, replay = assemble(sse_chunks(first.text)), assemble(sse_chunks(second.text))
    assert replay == original
    if model == "cached":
        assert replay["content"] == m
    else:
        assert replay["tool_calls"][0]["name"] == "get_weather"
        assert replay["tool_calls"][0]["arguments"].startswith('{"city": "Paris"')
    # the usage chunk appears only when the client asked for it
    assert (replay["usage"] is not None) == include_usage
    chunks = sse_chunks(second.text)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(ch["id"] == chunks[0]["id"] for ch in chunks)
    assert len(fake_upstream.find(m)) == 1


@pytest.mark.parametrize("model", ["cached", "cached-tools"])
async def test_plain_answer_replays_as_a_stream(
    env: dict[str, str], fake_upstream: FakeUpstream, model: str
) -> None:
    m = marker()
    async with app_client(env) as c:
        plain = await post(c, chat(model, m))
        streamed = await post(
            c, chat(model, m, stream=True, stream_options={"include_usage": True})
        )
    assert plain.headers["x-gateway-cache"] == "MISS"
    assert streamed.headers["x-gateway-cache"] == "HIT"
    assert assemble(sse_chunks(streamed.text)) == from_completion(plain.json())
    assert len(fake_upstream.find(m)) == 1


@pytest.mark.parametrize("model", ["cached", "cached-tools"])
async def test_streamed_answer_serves_a_plain_request(
    env: dict[str, str], fake_upstream: FakeUpstream, model: str
) -> None:
    m = marker()
    async with app_client(env) as c:
        streamed = await post(c, chat(model, m, stream=True))
        plain = await post(c, chat(model, m))
        reference = await post(c, chat("openai/fake-tools" if "tools" in model else "uncached", m))
    assert streamed.headers["x-gateway-cache"] == "MISS"
    assert plain.headers["x-gateway-cache"] == "HIT"
    got = plain.json()
    assert got["object"] == "chat.completion"
    view = from_completion(got)
    original = assemble(sse_chunks(streamed.text))
    assert {k: view[k] for k in ("content", "tool_calls", "finish_reason")} == {
        k: original[k] for k in ("content", "tool_calls", "finish_reason")
    }
    # usage was kept although the streaming client did not ask for it
    assert view["usage"]["completion_tokens"] > 0
    # and the message has the shape a non-streamed upstream answer has
    want = reference.json()["choices"][0]["message"]
    assert set(got["choices"][0]["message"]) >= set(want) - {"annotations"}
    assert got["choices"][0]["message"]["content"] == want["content"]


# -- a streamed answer is stored as relayed, assembled when read -------------------------


def _raw_entry(request: Any, body: dict[str, Any]) -> bytes | None:
    """The entry as Redis holds it; a store goes out with the next call or after a
    couple of milliseconds (``autopipe.LINGER_S``), so it is waited for, briefly."""
    digest = cache_key("anonymous", "chat", body)
    raw: bytes | None = None
    with request.getfixturevalue("redis_server").client() as r:
        for _ in range(100):
            raw = r.get(f"gw:{{anonymous}}:cache:{digest}")
            if raw is not None:
                break
            time.sleep(0.01)
    return raw


@pytest.mark.redis
async def test_a_streamed_miss_is_stored_as_relayed(
    redis_url: str, cache_config: Path, fake_upstream: FakeUpstream, request: Any
) -> None:
    """What the streaming client got goes to Redis as it was (``gws1``), to be assembled
    by the first hit, which writes the answer back (``gwc1``): a plain client gets the
    chat.completion, a streaming one the replay, both from the one upstream call."""
    m = marker()
    body = chat("cached", m)
    async with app_client(app_env(cache_config, fake_upstream, redis_url)) as c:
        streamed = await post(c, {**body, "stream": True})
        raw = _raw_entry(request, body)
        plain = await post(c, body)
        again = await post(c, {**body, "stream": True})
    assert raw is not None and raw.startswith(b"gws1 openai ")
    assert raw.endswith(b"data: [DONE]\n\n")
    assert [r.headers["x-gateway-cache"] for r in (streamed, plain, again)] == [
        "MISS",
        "HIT",
        "HIT",
    ]
    assert plain.json()["choices"][0]["message"]["content"] == m
    assert plain.json()["usage"]["completion_tokens"] > 0  # the provider's, kept aside
    assert assemble(sse_chunks(again.text))["content"] == m
    assert len(fake_upstream.find(m)) == 1
    # the first hit wrote the answer back in place of the frames, with the entry's TTL
    compacted = _raw_entry(request, body)
    assert compacted is not None and compacted.startswith(b"gwc1 openai ")
    assert compacted.split(b"\n", 1)[1] == plain.content
    digest = cache_key("anonymous", "chat", body)
    with request.getfixturevalue("redis_server").client() as r:
        assert 0 < r.pttl(f"gw:{{anonymous}}:cache:{digest}") <= 60_000


@pytest.mark.redis
async def test_a_stored_stream_that_does_not_assemble_is_a_miss(
    redis_url: str, cache_config: Path, fake_upstream: FakeUpstream, request: Any
) -> None:
    """An entry whose frames are not a whole answer (no finish reason here) is no hit:
    the request goes upstream and its answer replaces the entry."""
    m = marker()
    body = chat("cached", m)
    digest = cache_key("anonymous", "chat", body)
    frames = b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"stale"}}]}\n\n'
    with request.getfixturevalue("redis_server").client() as r:
        r.set(f"gw:{{anonymous}}:cache:{digest}", b"gws1 openai 1 1 0\n" + frames, px=60_000)
    async with app_client(app_env(cache_config, fake_upstream, redis_url)) as c:
        first = await post(c, body)
        second = await post(c, body)
    assert [r.headers["x-gateway-cache"] for r in (first, second)] == ["MISS", "HIT"]
    assert first.json()["choices"][0]["message"]["content"] == m
    assert second.content == first.content
    assert len(fake_upstream.find(m)) == 1


@pytest.mark.parametrize("limit", ["keep", "entry"])
async def test_a_stream_too_long_to_keep_is_stored_assembled(
    env: dict[str, str],
    backend: str,
    fake_upstream: FakeUpstream,
    request: Any,
    monkeypatch: pytest.MonkeyPatch,
    limit: str,
) -> None:
    """Past ``KEEP_BYTES`` (memory stays bounded) or past the entry limit (the frames are
    several times the answer's size) the stream is assembled as before and stored as the
    chat.completion, which still serves both kinds of client."""
    from gateway.pipeline import cache_replay

    if limit == "keep":
        monkeypatch.setattr(cache_replay, "KEEP_BYTES", 300)
    else:
        env = {**env, "GATEWAY_CACHE_MAX_ENTRY_BYTES": "2048"}
    m = marker() + " " + "word " * 120  # ~40 echoed pieces: ~7 KB of frames, ~1 KB of JSON
    body = chat("cached", m)
    async with app_client(env) as c:
        streamed = await post(c, {**body, "stream": True})
        raw = _raw_entry(request, body) if backend == "redis" else b"gwc1 openai (unread)"
        plain = await post(c, body)
        again = await post(c, {**body, "stream": True})
    assert raw is not None and raw.startswith(b"gwc1 openai ")
    assert [r.headers["x-gateway-cache"] for r in (streamed, plain, again)] == [
        "MISS",
        "HIT",
        "HIT",
    ]
    assert plain.json()["choices"][0]["message"]["content"] == m
    assert assemble(sse_chunks(again.text)) == assemble(sse_chunks(streamed.text))
    assert len(fake_upstream.find(m)) == 1


# -- errors are never stored -----------------------------------------------------------


@pytest.mark.parametrize(("model", "status"), [("cached-400", 400), ("cached-500", 502)])
async def test_errors_are_not_cached(
    env: dict[str, str], fake_upstream: FakeUpstream, model: str, status: int
) -> None:
    m = marker()
    async with app_client(env) as c:
        first = await post(c, chat(model, m))
        per_request = len(fake_upstream.find(m))  # a 5xx is retried by stage 6
        second = await post(c, chat(model, m))
    assert first.status_code == second.status_code == status
    assert "x-gateway-cache" not in first.headers
    assert per_request >= 1
    assert len(fake_upstream.find(m)) == 2 * per_request


async def test_a_cut_stream_is_not_cached(env: dict[str, str], fake_upstream: FakeUpstream) -> None:
    m = marker() + " long enough to be cut after two chunks"
    async with app_client(env) as c:
        first = await post(c, chat("cached-cut", m, stream=True))
        second = await post(c, chat("cached-cut", m, stream=True))
        plain = await post(c, chat("cached-cut", m))  # fake-cut only cuts streams
    assert first.status_code == 200 and '"error"' in first.text and "[DONE]" not in first.text
    assert second.headers["x-gateway-cache"] == "MISS"
    assert plain.headers["x-gateway-cache"] == "MISS"
    assert len(fake_upstream.find(m)) == 3


# -- embeddings ------------------------------------------------------------------------


async def test_embeddings(env: dict[str, str], fake_upstream: FakeUpstream) -> None:
    m = marker()
    body = {"model": "cached-embed", "input": [m, "second"], "dimensions": 4}
    async with app_client(env) as c:
        a = await c.post("/v1/embeddings", json=body)
        b = await c.post("/v1/embeddings", json=body)
        other = await c.post("/v1/embeddings", json={**body, "dimensions": 8})
        chat_same_alias = await post(c, chat("cached-embed", m))
    assert [a.status_code, b.status_code] == [200, 200]
    assert [a.headers["x-gateway-cache"], b.headers["x-gateway-cache"]] == ["MISS", "HIT"]
    assert a.content == b.content and len(b.json()["data"]) == 2
    assert other.headers["x-gateway-cache"] == "MISS"
    assert chat_same_alias.headers["x-gateway-cache"] == "MISS"  # kind is in the key
    assert len(fake_upstream.find(m, "/v1/embeddings")) == 2


# -- tenants ---------------------------------------------------------------------------


async def test_two_tenants_never_share_an_entry(
    env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    """Stage 1 derives the tenant from the presented key (open mode: a digest of it)."""
    m = marker()
    async with app_client(env) as c:
        a1 = await post(c, chat("cached", m), authorization="Bearer key-of-tenant-a")
        b1 = await post(c, chat("cached", m), authorization="Bearer key-of-tenant-b")
        a2 = await post(c, chat("cached", m), authorization="Bearer key-of-tenant-a")
        b2 = await post(c, chat("cached", m), authorization="Bearer key-of-tenant-b")
        anon = await post(c, chat("cached", m))
    assert [r.headers["x-gateway-cache"] for r in (a1, b1, a2, b2, anon)] == [
        "MISS",
        "MISS",
        "HIT",
        "HIT",
        "MISS",
    ]
    assert len(fake_upstream.find(m)) == 3


# -- single-flight ---------------------------------------------------------------------


async def test_single_flight_in_one_process(env: dict[str, str]) -> None:
    n = 8
    m = marker()
    before = provider_calls("mock", "cached-slow")
    async with app_client(env) as c:
        rs = await asyncio.gather(
            *[
                post(c, chat("cached-slow", m, stream=bool(i % 2)))  # streams follow too
                for i in range(n)
            ]
        )
    assert provider_calls("mock", "cached-slow") - before == 1
    assert all(r.status_code == 200 for r in rs)
    assert sorted(r.headers["x-gateway-cache"] for r in rs) == ["HIT"] * (n - 1) + ["MISS"]
    contents = set()
    for i, r in enumerate(rs):
        if i % 2:
            contents.add(assemble(sse_chunks(r.text))["content"])
        else:
            contents.add(r.json()["choices"][0]["message"]["content"])
    assert len(contents) == 1


async def test_single_flight_across_two_apps_sharing_redis(
    cache_config: Path, fake_upstream: FakeUpstream, redis_url: str
) -> None:
    env = app_env(cache_config, fake_upstream, redis_url)
    m = marker()
    before = provider_calls("mock", "cached-slow")
    async with app_client(env) as c1, app_client(env) as c2:
        rs = await asyncio.gather(
            *[post(c1 if i % 2 else c2, chat("cached-slow", m)) for i in range(8)]
        )
    assert provider_calls("mock", "cached-slow") - before == 1
    assert sorted(r.headers["x-gateway-cache"] for r in rs) == ["HIT"] * 7 + ["MISS"]
    assert len({r.content for r in rs}) == 1


async def test_when_the_leader_fails_followers_go_upstream_themselves(
    env: dict[str, str], fake_upstream: FakeUpstream, backend: str, request: Any
) -> None:
    n = 5
    m = marker()
    async with app_client(env) as c:
        rs = await asyncio.gather(*[post(c, chat("cached-400", m)) for _ in range(n)])
        await asyncio.sleep(0.05)
    assert [r.status_code for r in rs] == [400] * n  # nobody hangs; the error is not cached
    assert len(fake_upstream.find(m)) == n  # (a 4xx is never retried by stage 6)
    if backend == "redis":
        with request.getfixturevalue("redis_server").client() as r:
            assert r.keys("gw:*:lock:*") == []  # every lock was released


async def test_a_cancelled_leader_releases_its_followers(env: dict[str, str]) -> None:
    m = marker()
    async with app_client(env) as c:
        leader = asyncio.create_task(post(c, chat("cached-slow", m)))
        await asyncio.sleep(0.05)
        follower = asyncio.create_task(post(c, chat("cached-slow", m)))
        await asyncio.sleep(0.05)
        leader.cancel()
        t0 = time.perf_counter()
        r = await asyncio.wait_for(follower, 5)
    assert r.status_code == 200
    assert time.perf_counter() - t0 < 2.0


# -- Redis slow or gone ----------------------------------------------------------------


async def test_redis_unreachable_means_bypass_not_5xx(
    cache_config: Path, fake_upstream: FakeUpstream
) -> None:
    from tests.harness import closed_port

    env = app_env(cache_config, fake_upstream, f"redis://127.0.0.1:{closed_port()}/0")
    m = marker()
    errors = cache_metric("llm_cache_errors_total", op="lookup")
    async with app_client(env) as c:
        t0 = time.perf_counter()
        rs = [await post(c, chat("cached", m)) for _ in range(3)]
        s = await post(c, chat("cached", m, stream=True))
        elapsed = time.perf_counter() - t0
    assert [r.status_code for r in rs] == [200] * 3 and s.status_code == 200
    assert [r.headers["x-gateway-cache"] for r in [*rs, s]] == ["BYPASS"] * 4
    assert sse_chunks(s.text)
    assert len(fake_upstream.find(m)) == 4
    assert cache_metric("llm_cache_errors_total", op="lookup") > errors
    assert elapsed < 3.0


@pytest.mark.redis
async def test_redis_paused_then_back(
    cache_config: Path, fake_upstream: FakeUpstream, own_redis: RedisServer
) -> None:
    env = app_env(cache_config, fake_upstream, own_redis.url)
    m = marker()
    async with app_client(env) as c:
        assert (await post(c, chat("cached", m))).headers["x-gateway-cache"] == "MISS"
        await asyncio.sleep(0.1)  # the store runs after the response; let it land in Redis
        assert (await post(c, chat("cached", m))).headers["x-gateway-cache"] == "HIT"
        own_redis.pause()
        try:
            t0 = time.perf_counter()
            paused = [await post(c, chat("cached", m)) for _ in range(3)]
            slowest = time.perf_counter() - t0
        finally:
            own_redis.resume()
        assert [r.status_code for r in paused] == [200] * 3
        assert [r.headers["x-gateway-cache"] for r in paused] == ["BYPASS"] * 3
        assert slowest < 1.5  # one 50 ms timeout, then the cool-down answers at once
        await asyncio.sleep(0.6)  # the cool-down ends; Redis is used again by itself
        back = await post(c, chat("cached", m))
    assert back.headers["x-gateway-cache"] == "HIT"


@pytest.mark.redis
async def test_scripts_survive_script_flush(
    cache_config: Path, fake_upstream: FakeUpstream, redis_server: RedisServer, redis_url: str
) -> None:
    env = app_env(cache_config, fake_upstream, redis_url)
    m1, m2 = marker(), marker()
    async with app_client(env) as c:
        assert (await post(c, chat("cached", m1))).headers["x-gateway-cache"] == "MISS"
        await asyncio.sleep(0.1)  # the background store lands; the next lookup reads Redis
        with redis_server.client() as r:
            r.script_flush()
        assert (await post(c, chat("cached", m1))).headers["x-gateway-cache"] == "HIT"
        with redis_server.client() as r:
            r.script_flush()
        assert (await post(c, chat("cached", m2))).headers["x-gateway-cache"] == "MISS"
        await asyncio.sleep(0.05)
        assert (await post(c, chat("cached", m2))).headers["x-gateway-cache"] == "HIT"
