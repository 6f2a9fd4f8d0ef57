"""The cache and the rate limits together, through the whole app on both backends: a hit
never takes from a limit (on Redis the reservation goes out with the lookup, in its
round trip, and Redis makes it only for a request the lookup sends upstream), a miss
takes exactly once, a refusal is the usual 429, and a hit is served even when the
limit is spent."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.cache.conftest import app_client, app_env
from tests.cache.helpers import chat, marker
from tests.harness import FakeUpstream
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
URL = "/v1/chat/completions"


@pytest.fixture
def limited_env(
    backend: str, tmp_path: Path, fake_upstream: FakeUpstream, request: pytest.FixtureRequest
) -> tuple[dict[str, str], str]:
    alias = "limited-" + uuid.uuid4().hex[:8]  # its own buckets in the shared redis-server
    cfg = tmp_path / "limited.yaml"
    cfg.write_text(
        "models:\n"
        f"  - alias: {alias}\n"
        "    cache: {ttl: 60}\n"
        "    limits: {rpm: 3, tpm: 1000000}\n"
        "    deployments:\n"
        "      - {provider: openai, model: fake-echo}\n"
    )
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    return app_env(cfg, fake_upstream, url), alias


async def _post(c: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await c.post(URL, json=body, headers=headers)


def _exists_calls(server: RedisServer) -> int:
    with server.client() as c:
        stats = c.info("commandstats").get("cmdstat_exists", {})
    return int(stats.get("calls", 0))


async def test_hits_take_nothing_misses_take_once(
    limited_env: tuple[dict[str, str], str], backend: str, request: pytest.FixtureRequest
) -> None:
    env, alias = limited_env
    server: RedisServer | None = None
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
    a, b, c_, d = (marker() for _ in range(4))
    async with app_client(env) as c:
        exists_before = _exists_calls(server) if server else 0
        first = await _post(c, chat(alias, a, temperature=0))
        assert first.status_code == 200 and first.headers["x-gateway-cache"] == "MISS"
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        for _ in range(3):  # hits: answered, nothing taken, no limit headers
            hit = await _post(c, chat(alias, a, temperature=0))
            assert hit.status_code == 200 and hit.headers["x-gateway-cache"] == "HIT"
            assert "x-ratelimit-remaining-requests" not in hit.headers
        # a no-store miss (its lookup takes no fill lock) takes once too
        second = await _post(c, chat(alias, b, temperature=0), **{"cache-control": "no-store"})
        assert second.status_code == 200 and second.headers["x-gateway-cache"] == "MISS"
        assert second.headers["x-ratelimit-remaining-requests"] == "1"
        third = await _post(c, chat(alias, c_, temperature=0))
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        refused = await _post(c, chat(alias, d, temperature=0))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        late = await _post(c, chat(alias, a, temperature=0))  # the limit is spent: still a hit
        assert late.status_code == 200 and late.headers["x-gateway-cache"] == "HIT"
        if server is not None:
            # every Redis lookup carried its reservation (the guard's EXISTS): the 8
            # requests but a hit that joined the first miss's fill in this process
            joined = REGISTRY.get_sample_value(
                "llm_cache_coalesced_total", {"model": alias, "scope": "process"}
            )
            assert _exists_calls(server) - exists_before == 8 - int(joined or 0)
