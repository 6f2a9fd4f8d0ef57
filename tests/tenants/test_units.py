"""The tenants' pure parts: digests, periods, charges and holds, placement, session ids,
and the key directory's cache (invalidation, the degraded TTL, lookups racing an
invalidation, a store that stops answering), on the in-process store."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config import Price
from gateway.errors import ServiceUnavailable
from gateway.pipeline import placement
from gateway.pipeline.auth import BudgetLimit, Principal
from gateway.store.base import StateUnavailable
from gateway.store.tenants import MemoryTenantStore
from gateway.tenants import records
from gateway.tenants.directory import DEGRADED_S, FRESH_S, Directory
from gateway.tenants.ledger import charge, fmt_usd
from gateway.wire.chat import Usage

pytestmark = pytest.mark.anyio


def test_digests_are_keyed_by_the_pepper() -> None:
    secret = records.new_secret()
    assert secret.startswith("sk-gw-") and len(secret) == 49
    a, b = records.digest(b"pepper-one-0123456789", secret), records.digest(None, secret)
    assert a != b and len(a) == 64 and a == records.digest(b"pepper-one-0123456789", secret)
    assert records.new_secret() != secret


def test_periods_are_utc_and_reset_on_time() -> None:
    t = 1_795_000_000.0  # 2026-11-18 08:26:40 UTC
    day = records.period("day", t)
    assert day.ident == "d20261118" and day.reset_at == 1795046400  # next midnight
    assert day.expire_at == day.reset_at + 2 * 86400
    month = records.period("month", t)
    assert month.ident == "m202611" and month.reset_at == 1796083200  # 2026-12-01
    assert records.period("month", 1796083200 - 1).ident == "m202611"
    assert records.period("month", 1796083200).ident == "m202612"
    dec = records.period("month", 1796083200 + 86400)
    assert dec.reset_at == 1798761600  # 2027-01-01
    assert records.period("total", t) == ("all", None, 0)


def _dep(price: Price | None = None, region: str | None = None, **kw: Any) -> Any:
    base = {"provider": "openai", "model": "gpt-4o", "label": "m", "mock": None}
    return SimpleNamespace(price=price, region=region, **{**base, **kw})


def test_charge_by_token_class_in_nano_usd() -> None:
    usage = Usage(
        prompt_tokens=1000,
        completion_tokens=300,
        prompt_tokens_details={"cached_tokens": 400},
        completion_tokens_details={"reasoning_tokens": 100},
    )
    c = charge(_dep(Price(input=2.5, cached_input=1.25, output=10.0)), usage)
    assert c.priced and c.tokens == (600, 400, 200, 100)
    assert c.nano == (1_500_000, 500_000, 2_000_000, 1_000_000) and c.total == 5_000_000
    assert c.header() == "0.005"
    assert c.breakdown() == ("input=0.0015, cached_input=0.0005, output=0.002, reasoning=0.001")
    unpriced = charge(_dep(model="my-finetune"), usage)
    assert not unpriced.priced and unpriced.total == 0 and unpriced.tokens == c.tokens
    assert fmt_usd(0) == "0" and fmt_usd(1_500_000_000) == "1.5" and fmt_usd(1) == "0.000000001"


def test_placement_keeps_pinned_and_budgeted_requests_in_bounds() -> None:
    eu, us, nowhere = _dep(region="eu"), _dep(region="us"), _dep(region=None)
    unpriced = _dep(region="eu", model="my-finetune")
    free = Principal(tenant="t", name="t")
    pinned = Principal(tenant="t", name="t", regions=frozenset({"eu"}))
    budgeted = Principal(tenant="t", name="t", budgets=(BudgetLimit("key", "t", 1, "day"),))
    assert placement.only_allowed(free, [eu, us, nowhere]) == [eu, us, nowhere]
    assert placement.only_allowed(pinned, [eu, us, nowhere, unpriced]) == [eu, unpriced]
    assert placement.only_allowed(budgeted, [eu, unpriced]) == [eu]
    groups = {
        "a": SimpleNamespace(name="a", label="a", deployments=(us,), fallbacks=("b",),
                             context_fallback="c"),
        "b": SimpleNamespace(name="b", label="b", deployments=(nowhere,), fallbacks=("a",),
                             context_fallback=None),
        "c": SimpleNamespace(name="c", label="c", deployments=(eu,), fallbacks=(),
                             context_fallback=None),
    }  # fmt: skip
    assert list(placement.reachable(groups, groups["a"], pinned)) == [eu]  # type: ignore[arg-type]
    err = placement.refusal(pinned, groups["b"])  # type: ignore[arg-type]
    assert err.status == 403 and err.code == "region_not_allowed"


async def _directory(**kw: Any) -> tuple[Directory, MemoryTenantStore, list[float]]:
    store = MemoryTenantStore()
    now = [1000.0]
    d = Directory(store, b"pepper-0123456789abcdef", None, clock=lambda: now[0], **kw)
    await d.start()
    return d, store, now


async def _add_key(d: Directory, store: MemoryTenantStore, **kw: Any) -> tuple[str, str]:
    secret = records.new_secret()
    rec = records.KeyRecord(
        id=records.new_key_id(), name="n", hint="h", digest=d.digest(secret), **kw
    )
    await store.put("key", rec.id, records.encode(rec), digest=rec.digest)
    return secret, rec.id


async def test_directory_caches_and_drops_on_invalidation() -> None:
    d, store, now = await _directory()
    secret, kid = await _add_key(d, store, team=None)
    p = await d.lookup(secret)
    assert p is not None and p.tenant == kid
    await store.put("key", kid, None, drop_digest=d.digest(secret))  # gone, not announced
    assert await d.lookup(secret) is p  # cached
    now[0] += FRESH_S + 0.1
    assert await d.lookup(secret) is None  # the TTL is the backstop
    secret2, _ = await _add_key(d, store)
    assert await d.lookup(secret2) is not None
    await store.put("key", "x", None, drop_digest=d.digest(secret2))
    await store.publish("k:" + d.digest(secret2))  # announced: gone at once
    assert await d.lookup(secret2) is None


async def test_directory_shortens_its_cache_while_unsubscribed() -> None:
    d, store, now = await _directory()
    store.subscribed = False  # type: ignore[misc]
    secret, kid = await _add_key(d, store)
    assert await d.lookup(secret) is not None
    await store.put("key", kid, None, drop_digest=d.digest(secret))
    now[0] += DEGRADED_S + 0.01
    assert await d.lookup(secret) is None  # within a second, with no message


async def test_a_lookup_racing_an_invalidation_is_not_cached() -> None:
    d, store, _ = await _directory()
    secret, kid = await _add_key(d, store)
    real = store.by_digest

    async def slow(digest: str) -> bytes | None:
        raw = await real(digest)
        d.invalidate("k:" + digest)  # the revoke's message lands mid-read
        return raw

    store.by_digest = slow  # type: ignore[method-assign]
    assert await d.lookup(secret) is not None  # the read answers...
    store.by_digest = real  # type: ignore[method-assign]
    await store.put("key", kid, None, drop_digest=d.digest(secret))
    assert await d.lookup(secret) is None  # ...but was not kept


async def test_concurrent_lookups_share_one_read() -> None:
    d, store, _ = await _directory()
    secret, _ = await _add_key(d, store)
    reads = 0
    real = store.by_digest

    async def counted(digest: str) -> bytes | None:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return await real(digest)

    store.by_digest = counted  # type: ignore[method-assign]
    found = await asyncio.gather(*(d.lookup(secret) for _ in range(20)))
    assert reads == 1 and all(p is found[0] for p in found)


async def test_a_store_outage_keeps_known_keys_and_refuses_unknown_ones() -> None:
    d, store, now = await _directory()
    secret, _ = await _add_key(d, store)
    assert await d.lookup(secret) is not None

    async def down(digest: str) -> bytes | None:
        raise StateUnavailable("timeout")

    store.by_digest = down  # type: ignore[method-assign]
    now[0] += FRESH_S + 1
    assert await d.lookup(secret) is not None  # seen lately: still served
    with pytest.raises(ServiceUnavailable) as err:
        await d.lookup(records.new_secret())
    assert err.value.status == 503 and err.value.headers["retry-after"] == "1"
