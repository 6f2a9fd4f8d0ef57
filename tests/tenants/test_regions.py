"""Data residency through the one pipeline, against the fault-injecting upstream over real
sockets: a key pinned to a region never reaches a deployment outside it, by routing,
retry, hedge or fallback alike, and gets a 403 naming the reason when nothing is left.
(``test_admin.py`` covers the same over HTTP for plain routing.)"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest

from gateway.api.chat import CHAT
from gateway.app import build_gateway, build_pipeline
from gateway.config import parse_config
from gateway.pipeline.routing import Router
from gateway.settings import Secret, Settings
from gateway.tenants import records
from gateway.tenants.admin import TenantAdmin
from tests.resilience.helpers import Fault, alias, context, dep

pytestmark = pytest.mark.e2e


def _models(fault: Fault) -> list[dict[str, Any]]:
    retry = {"attempts": 3, "backoff": 0.01, "max_backoff": 0.02}
    return [
        alias(
            "primary",
            dep(fault, "fault-503", region="eu"),
            dep(fault, "fault-us-primary", region="us"),
            fallbacks=["fb-us", "fb-eu"],
            retry=retry,
        ),
        alias("fb-us", dep(fault, "fault-us-fallback", region="us")),
        alias("fb-eu", dep(fault, "fault-eu-fallback", region="eu")),
        alias(
            "hedged",
            dep(fault, "fault-slow-300ms", region="eu", priority=0),
            dep(fault, "fault-us-fast", region="us", priority=1),
            dep(fault, "fault-slow-301ms", region="eu", priority=2),
            hedge={"delay_ms": 50},
            strategy="priority",
        ),
        alias("apac", dep(fault, "fault-apac", region="apac")),
    ]


async def _run(fault: Fault, scenario: Any) -> Any:
    cfg = parse_config({"models": _models(fault)}, environ={})
    settings = Settings(config=cfg, master_key=Secret("m" * 20))
    gw = build_gateway(settings, Router(cfg.routing, rng=random.Random(3)))
    pipeline = build_pipeline(gw)
    await gw.tenants.start()
    tenants = TenantAdmin(gw.tenants, {"eu", "us", "apac"})

    async def key(**kw: Any) -> str:
        made = await tenants.create_key(records.KeyCreate(name="k", **kw))
        return str(made["key"])

    async def ask(secret: str, model: str) -> tuple[int, dict[str, Any]]:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        ctx = context(CHAT, body, [(b"authorization", f"Bearer {secret}".encode())])
        reply = await pipeline.run(CHAT, ctx)
        return reply.status, json.loads(reply.body)

    try:
        return await scenario(key, ask)
    finally:
        await gw.registry.aclose()


def test_a_pinned_request_falls_back_only_within_its_regions(fault: Fault) -> None:
    fault.reset()

    async def scenario(key: Any, ask: Any) -> None:
        eu = await key(regions=["eu"])
        status, body = await ask(eu, "primary")
        assert status == 200 and body["model"] == "fault-eu-fallback"
        anywhere = await key()
        for _ in range(4):  # unpinned: the us deployment of the alias itself serves
            status, body = await ask(anywhere, "primary")
            assert status == 200 and body["model"] == "fault-us-primary"

    asyncio.run(_run(fault, scenario))
    assert fault.count("fault-503") >= 2  # the eu deployment was retried...
    assert fault.count("fault-us-fallback") == 0  # ...and us never tried for the eu key
    assert fault.count("fault-eu-fallback") == 1
    assert fault.count("fault-us-primary") == 4


def test_a_pinned_request_hedges_only_within_its_regions(fault: Fault) -> None:
    fault.reset()

    async def scenario(key: Any, ask: Any) -> None:
        eu = await key(regions=["eu"])
        t0 = time.monotonic()
        status, body = await ask(eu, "hedged")
        assert status == 200 and body["model"].startswith("fault-slow-")
        assert time.monotonic() - t0 >= 0.25
        status, body = await ask(await key(), "hedged")  # unpinned: the hedge goes to us
        assert status == 200 and body["model"] == "fault-us-fast"

    asyncio.run(_run(fault, scenario))
    assert fault.count("fault-slow-300ms") + fault.count("fault-slow-301ms") == 3  # + a twin
    assert fault.count("fault-us-fast") == 1


def test_nowhere_to_go_is_a_403_naming_the_regions(fault: Fault) -> None:
    fault.reset()

    async def scenario(key: Any, ask: Any) -> None:
        status, body = await ask(await key(regions=["apac"]), "primary")
        assert status == 403
        err = body["error"]
        assert err["code"] == "region_not_allowed" and err["param"] == "model"
        assert "'primary'" in err["message"] and "(apac)" in err["message"]
        status, _ = await ask(await key(regions=["apac"]), "apac")
        assert status == 200

    asyncio.run(_run(fault, scenario))
    assert sum(fault.count(m) for m in ("fault-503", "fault-us-primary")) == 0
