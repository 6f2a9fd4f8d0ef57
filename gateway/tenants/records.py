"""Virtual keys and teams as stored, the admin API's request bodies, key secrets and
their digests, and budget periods.

A key's secret is ``sk-gw-`` + 43 characters (32 random bytes, base64url): shown
once, at creation or rotation, and never stored. The store holds its *keyed
digest*, HMAC-SHA256 under the pepper (``GATEWAY_KEY_PEPPER``); lookups are by
digest. Without a pepper the digest is HMAC under a fixed public string: still
safe against a leaked Redis dump (a key has 256 random bits), not against
someone who can write to Redis and add a record for a secret of their own choosing
(the pepper is what they would lack). Changing the pepper invalidates every
virtual key (rotate them).

Periods are UTC: a ``day`` budget resets at midnight UTC, a ``month`` budget on
the first of the month, a ``total`` budget never. Amounts are kept in integer
nano-USD (1e-9 USD), so sums are exact; a budget is at most 9,000,000 USD.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, NamedTuple

import msgspec
from msgspec import UNSET, Meta, UnsetType

from gateway.config import Limits

__all__ = [
    "BudgetSpec",
    "KeyCreate",
    "KeyRecord",
    "KeyUpdate",
    "Period",
    "TeamCreate",
    "TeamRecord",
    "TeamUpdate",
    "digest",
    "new_key_id",
    "new_secret",
    "period",
    "to_nano",
]

NANO = 1_000_000_000  # nano-USD per USD
SECRET_PREFIX = "sk-gw-"
_NO_PEPPER = b"llm-gateway: no GATEWAY_KEY_PEPPER set"

Ident = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
Region = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
Model = Annotated[str, Meta(min_length=1, max_length=200)]
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]],
    Meta(max_length=32),
]
Seconds = Annotated[float, Meta(ge=0, le=2**40)]


class BudgetSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    usd: Annotated[float, Meta(ge=0, le=9_000_000)]
    period: Literal["day", "month", "total"] = "month"


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A virtual key as stored (never its secret)."""

    id: str
    name: str
    hint: str  # "sk-gw-…" and the secret's last four characters, to tell keys apart
    digest: str | None  # HMAC of the secret; None once revoked
    team: str | None = None
    models: list[str] | None = None
    limits: Limits | None = None
    budget: BudgetSpec | None = None
    regions: list[str] | None = None
    expires_at: float | None = None  # unix seconds
    metadata: dict[str, str] = {}
    created_at: float = 0.0
    updated_at: float = 0.0
    revoked_at: float | None = None
    rev: int = 1  # bumped on every change: caches and the limiter's plans key on it


class TeamRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    models: list[str] | None = None
    limits: Limits | None = None
    budget: BudgetSpec | None = None
    regions: list[str] | None = None
    metadata: dict[str, str] = {}
    created_at: float = 0.0
    updated_at: float = 0.0
    rev: int = 1


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class KeyCreate(_Body, frozen=True):
    name: Name
    team: Ident | None = None
    models: list[Model] | None = None
    limits: Limits | None = None
    budget: BudgetSpec | None = None
    regions: list[Region] | None = None
    expires_at: Seconds | None = None
    expires_in: Seconds | None = None  # seconds from now (instead of expires_at)
    metadata: Metadata = {}


class KeyUpdate(_Body, frozen=True):
    """Fields left out stay; ``null`` clears one."""

    name: Name | UnsetType = UNSET
    team: Ident | UnsetType | None = UNSET
    models: list[Model] | UnsetType | None = UNSET
    limits: Limits | UnsetType | None = UNSET
    budget: BudgetSpec | UnsetType | None = UNSET
    regions: list[Region] | UnsetType | None = UNSET
    expires_at: Seconds | UnsetType | None = UNSET
    metadata: Metadata | UnsetType = UNSET


class TeamCreate(_Body, frozen=True):
    id: Ident
    models: list[Model] | None = None
    limits: Limits | None = None
    budget: BudgetSpec | None = None
    regions: list[Region] | None = None
    metadata: Metadata = {}


class TeamUpdate(_Body, frozen=True):
    models: list[Model] | UnsetType | None = UNSET
    limits: Limits | UnsetType | None = UNSET
    budget: BudgetSpec | UnsetType | None = UNSET
    regions: list[Region] | UnsetType | None = UNSET
    metadata: Metadata | UnsetType = UNSET


def new_secret() -> str:
    return SECRET_PREFIX + base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def new_key_id() -> str:
    return "vk-" + os.urandom(8).hex()


def hint(secret: str) -> str:
    return f"{SECRET_PREFIX}…{secret[-4:]}"


def digest(pepper: bytes | None, secret: str) -> str:
    """The keyed digest a secret is stored and looked up by."""
    return hmac.new(
        pepper or _NO_PEPPER, secret.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


def to_nano(usd: float) -> int:
    return round(usd * NANO)


class Period(NamedTuple):
    ident: str  # part of the counter's key: d20261120, m202611, all
    reset_at: int | None  # unix second the next period starts (None: never)
    expire_at: int  # unix second after which the counter may go (0: never)


def period(kind: str, now: float | None = None) -> Period:
    """The budget period that contains ``now`` (UTC)."""
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if kind == "total":
        return Period("all", None, 0)
    if kind == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        reset = calendar.timegm((start + timedelta(days=1)).timetuple())
        return Period(f"d{t:%Y%m%d}", reset, reset + 2 * 86400)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    reset = calendar.timegm((year, month, 1, 0, 0, 0))
    return Period(f"m{t:%Y%m}", reset, reset + 2 * 86400)


encode = msgspec.json.Encoder().encode
decode_key = msgspec.json.Decoder(KeyRecord).decode
decode_team = msgspec.json.Decoder(TeamRecord).decode
