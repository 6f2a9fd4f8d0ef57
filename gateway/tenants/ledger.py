"""What a served request cost, by token class, and the ledger that adds it up.

``charge(dep, usage)`` prices an answer's usage at the deployment's price
(``pricing.price_for``): classes ``input`` (prompt tokens not read from a cache),
``cached_input``, ``output`` (completion tokens that are not reasoning) and
``reasoning`` (reasoning tokens where the provider reports them, at the output
rate). Amounts are integer nano-USD, rounded per class, so every sum is exact and
the header, the ledger and the budget counters agree to the nano-dollar. A model
with no price gives an unpriced charge: its tokens are recorded, its cost is not,
and no header claims it cost 0.

The ledger keeps, per UTC day, one Redis hash per key, per team and over all
(``gw:{spend}:<YYYYMMDD>:key:<id>``, ``...:team:<id>``, ``...:all``) whose fields
are ``<model>|<name>``: ``usd:<class>`` (nano-USD), ``tok:<class>``, ``requests``
and ``unpriced``. ``<model>`` is the alias label (bounded). Requests are added to
an in-process batch and flushed every ``FLUSH_S`` in one ``ledger_add.lua`` call
(one slot, ``{spend}``, so the per-key, per-team and overall totals move together).
A flush that fails is kept and retried with the next one (up to ``MAX_PENDING``
fields), so a Redis blip delays the ledger instead of losing it. Hashes live
``RETENTION_DAYS`` after their last write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from gateway import pricing
from gateway.store.base import StateUnavailable

if TYPE_CHECKING:
    from gateway.providers.base import Deployment
    from gateway.store.base import TenantStore
    from gateway.wire.chat import Usage

__all__ = [
    "CLASSES",
    "Charge",
    "Ledger",
    "Rates",
    "charge",
    "charge_at",
    "day_of",
    "fmt_usd",
    "rates_of",
]

CLASSES = ("input", "cached_input", "output", "reasoning")
FLUSH_S = 0.5
MAX_PENDING = 200_000
RETENTION_DAYS = 400
_TAG = "gw:{spend}"


class Charge(NamedTuple):
    """One answer's cost: nano-USD and tokens by class (``CLASSES`` order)."""

    priced: bool
    nano: tuple[int, int, int, int]
    tokens: tuple[int, int, int, int]

    @property
    def total(self) -> int:
        return sum(self.nano)

    def header(self) -> str:
        return fmt_usd(self.total)

    def breakdown(self) -> str:
        """``input=0.000012, output=0.000040``: the classes that had tokens."""
        nano, tokens = self.nano, self.tokens
        parts = [f"{CLASSES[i]}={fmt_usd(nano[i])}" for i in range(4) if tokens[i]]
        return ", ".join(parts)


def fmt_usd(nano: int) -> str:
    """USD with nine decimals, trailing zeros dropped: ``0.00012``, ``1.5``, ``0``."""
    whole, frac = divmod(nano, 1_000_000_000)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:09d}".rstrip("0")


def tokens_by_class(usage: Usage) -> tuple[int, int, int, int]:
    t = pricing.tokens_of(usage)
    details = usage.completion_tokens_details
    reasoning = 0
    if details and isinstance(details.get("reasoning_tokens"), int):
        reasoning = max(0, min(details["reasoning_tokens"], t.output))
    return (t.input, t.cached_input, t.output - reasoning, reasoning)


Rates = tuple[float, float, float, float] | None  # nano-USD per token, by class


def rates_of(dep: Deployment) -> Rates:
    """``dep``'s price per token by class (``CLASSES`` order) in nano-USD; None when
    unpriced. (USD per million tokens x 1000 = nano-USD per token.)"""
    price = pricing.price_for(dep)
    if price is None:
        return None
    cached = price.input if price.cached_input is None else price.cached_input
    return (price.input * 1000, cached * 1000, price.output * 1000, price.output * 1000)


def charge_at(rates: Rates, prompt: int, cached: int, completion: int, reasoning: int) -> Charge:
    """The cost of an answer's tokens (``cached`` of the ``prompt``, ``reasoning`` of the
    ``completion``, each already within its total) at ``rates``."""
    tokens = (max(0, prompt - cached), cached, max(0, completion - reasoning), reasoning)
    if rates is None:
        return Charge(False, (0, 0, 0, 0), tokens)
    nano = (
        round(tokens[0] * rates[0]),
        round(tokens[1] * rates[1]),
        round(tokens[2] * rates[2]),
        round(tokens[3] * rates[3]),
    )
    return Charge(True, nano, tokens)


def charge(dep: Deployment, usage: Usage) -> Charge:
    tokens = tokens_by_class(usage)
    return charge_at(
        rates_of(dep),
        tokens[0] + tokens[1],
        tokens[1],
        tokens[2] + tokens[3],
        tokens[3],
    )


def day_of(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%d")


def days(start: str, end: str) -> list[str]:
    """``YYYYMMDD`` from ``start`` to ``end``, both included."""
    d = datetime.strptime(start, "%Y%m%d")
    last = datetime.strptime(end, "%Y%m%d")
    out = []
    while d <= last:
        out.append(d.strftime("%Y%m%d"))
        d += timedelta(days=1)
    return out


def hash_key(day: str, entity: str) -> str:
    return f"{_TAG}:{day}:{entity}"


class Ledger:
    """Adds charges up per key, team and model per day; reads them back for reports."""

    def __init__(self, store: TenantStore) -> None:
        self.store = store
        self._pending: dict[str, dict[str, int]] = {}
        self._size = 0
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # requests not recorded: the pending batch was full
        self._day = (-1, "")  # (UTC day number, its YYYYMMDD): formatted once a day

    def add(self, key: str, team: str | None, model: str, c: Charge, now: float) -> None:
        n = int(now // 86_400)
        if self._day[0] != n:
            self._day = (n, day_of(now))
        day = self._day[1]
        fields: dict[str, int] = {f"{model}|requests": 1}
        if not c.priced:
            fields[f"{model}|unpriced"] = 1
        for cls, n, t in zip(CLASSES, c.nano, c.tokens, strict=True):
            if t:
                fields[f"{model}|tok:{cls}"] = t
            if n:
                fields[f"{model}|usd:{cls}"] = n
        entities = [f"key:{key}", "all"] + ([f"team:{team}"] if team else [])
        for entity in entities:
            self._merge(hash_key(day, entity), fields)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flusher())

    def _merge(self, key: str, fields: dict[str, int]) -> None:
        h = self._pending.get(key)
        if h is None:
            h = self._pending[key] = {}
        for f, v in fields.items():
            if f not in h:
                if self._size >= MAX_PENDING:
                    self.dropped += v if f.endswith("|requests") else 0
                    continue
                self._size += 1
                h[f] = 0
            h[f] += v

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()

    async def flush(self) -> None:
        """Write what is pending (kept for the next flush if the store fails)."""
        if not self._pending:
            return
        batch, self._pending, self._size = self._pending, {}, 0
        try:
            await self.store.ledger_add(batch, RETENTION_DAYS * 86400)
        except StateUnavailable:
            for key, fields in batch.items():
                self._merge(key, fields)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)

    async def read(self, entity: str, day_list: Iterable[str]) -> dict[str, dict[str, int]]:
        """``{day: {field: value}}`` of one entity's hashes (this process's pending
        amounts written first, so a report includes the requests just served)."""
        await self.flush()
        day_list = list(day_list)
        rows = await self.store.ledger_read([hash_key(d, entity) for d in day_list])
        return dict(zip(day_list, rows, strict=True))
