"""Budgets hold across replicas: 3 gateway processes share one Redis (standalone, then a
3-primary cluster); 150 concurrent clients on two keys of one team push far past the
team's USD budget for a few seconds (hundreds of requests), every request holding its
maximum cost in flight (the mock answers after 150 ms).

Spend (every admitted answer's cost) must stay within the budget plus one request's
hold (the issue's bound; admission is strict, so in fact within the budget), must
reach the budget minus one hold (nothing refused early), and the three accounts of it
must agree to the nano-dollar: the answers' ``x-gateway-cost-usd``-equivalent (input and
output cost the same here, so cost is tokens x price), the ledger (``/admin/spend``) and
the budget counter (``/admin/teams``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProc, metric_sum, start_gateway, wait_until
from tests.state.load import run_load

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.timeout(180)]

MASTER = "budget-accuracy-master-key"
PRICE = 1000.0  # USD per million tokens, input and output: 1 token = 1e6 nano-USD
BUDGET_USD = 3.0  # about 35 requests of ~85 tokens
CONFIG = f"""
models:
  - alias: paid
    deployments:
      - {{provider: mock, model: mock-1, price: {{input: {PRICE}, output: {PRICE}}},
         mock: {{latency_ms: 150, reply_tokens: 200}}}}
limits:
  redis_timeout_ms: 500
"""


@pytest.fixture
def replicas(state_dir: Path) -> Iterator[Any]:
    started: list[GatewayProc] = []

    def start(redis_url: str) -> list[GatewayProc]:
        path = state_dir / f"budget-accuracy-{len(started)}.yaml"
        path.write_text(CONFIG)
        env = {
            "REDIS_URL": redis_url,
            "GATEWAY_CONFIG": str(path),
            "GATEWAY_MASTER_KEY": MASTER,
            "GATEWAY_KEY_PEPPER": "budget-accuracy-pepper-0123456789",
            "LOG_LEVEL": "warning",
        }
        for i in range(3):
            started.append(start_gateway(state_dir / "logs", env, name=f"gw-budget{i}"))
        return started[-3:]

    try:
        yield start
    finally:
        for gw in started:
            gw.stop()


@pytest.mark.parametrize(("kind", "duration"), [("redis", 4.0), ("cluster", 3.0)])
def test_team_budget_overshoot_bound_across_replicas(
    kind: str, duration: float, replicas: Any, request: pytest.FixtureRequest
) -> None:
    if kind == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = request.getfixturevalue("redis_cluster").url
    gws = replicas(url)
    auth = {"authorization": f"Bearer {MASTER}"}
    team = f"acc-{kind}"
    with httpx.Client(base_url=gws[0].url + "/admin", headers=auth, timeout=10) as a:
        a.delete(f"/teams/{team}")
        budget = {"usd": BUDGET_USD, "period": "total"}
        assert a.post("/teams", json={"id": team, "budget": budget}).status_code == 201
        keys = [a.post("/keys", json={"name": f"k{i}", "team": team}).json() for i in range(2)]

    max_hold = 0

    def body(rng: Any) -> dict[str, Any]:
        nonlocal max_hold
        words = rng.randrange(1, 40)
        out = rng.randrange(5, 120)
        # the hold: prompt (at most ~2 tokens a word + 8 of chat framing) + max_tokens
        max_hold = max(max_hold, (2 * words + 8 + out) * int(PRICE * 1000))
        return {
            "model": "paid",
            "messages": [{"role": "user", "content": "spend " * words}],
            "max_tokens": out,
        }

    async def load() -> list[Any]:
        runs = await asyncio.gather(
            *(
                run_load(
                    [g.url for g in gws],
                    duration,
                    body,
                    clients=75,
                    headers={"authorization": f"Bearer {k['key']}"},
                    backoff=(0.02, 0.08),
                )
                for k in keys
            )
        )
        return [s for r in runs for s in r]

    samples = asyncio.run(load())
    statuses = {s.status for s in samples}
    assert statuses <= {200, 429}, statuses
    ok = [s for s in samples if s.status == 200]
    assert len(samples) >= 300, len(samples)  # hundreds of requests, most refused
    spent = sum(s.tokens for s in ok) * int(PRICE * 1000)  # nano-USD
    limit = int(BUDGET_USD * 1e9)
    report = {"requests": len(samples), "admitted": len(ok), "spent": spent, "hold": max_hold}
    assert spent <= limit + max_hold, report  # the bound the issue asks for
    assert spent <= limit, report  # strict admission: not even one hold over
    assert spent >= limit - max_hold, report  # and the budget was used, not refused early
    for gw in gws:
        assert metric_sum(gw.metrics(), "gateway_state_fallbacks_total") == 0

    def agree() -> bool:
        with httpx.Client(base_url=gws[1].url + "/admin", headers=auth, timeout=10) as a:
            ledger = a.get(f"/spend?team={team}").json()["total"]["nano_usd"]
            counter = a.get(f"/teams/{team}").json()["budget"]["used_usd"]
        report.update(ledger=ledger, counter=counter)
        return ledger == spent and round(counter * 1e9) == spent

    # each replica flushes its ledger batch within half a second
    assert wait_until(agree, timeout=5), report
    print(f"\n{kind}: {report}")
