"""What the admin API does with virtual keys, teams and spend (``api/admin.py`` is its
HTTP edge): validate, write the record, publish the invalidation, and shape the
answers. A key's secret appears in exactly two answers, its creation and its
rotation, and nowhere else (not in listings, logs or errors).

Every write publishes ``k:<digest>`` (a key: the old digest too, on rotation and
revocation) or ``t:<team>``, after the store has it, and drops this process's
cached copy at once; other replicas drop theirs when the message arrives.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.config import ConfigError, _check_one_limits
from gateway.errors import InvalidRequest, NotFound
from gateway.tenants import records as rec
from gateway.tenants.budget import budget_key
from gateway.tenants.ledger import CLASSES, days, fmt_usd

if TYPE_CHECKING:
    from collections.abc import Set as AbstractSet

    from gateway.config import Limits
    from gateway.tenants.tenancy import Tenancy

__all__ = ["TenantAdmin"]

MAX_DAYS = 366


def _changes(body: msgspec.Struct) -> dict[str, Any]:
    """The fields an update body sets (``null`` included, left-out ones not)."""
    fields = ((f, getattr(body, f)) for f in body.__struct_fields__)
    return {f: v for f, v in fields if v is not msgspec.UNSET}


def _view(struct: msgspec.Struct, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(struct)
    out.pop("digest", None)
    out.update(extra)
    return out


class TenantAdmin:
    def __init__(self, tenancy: Tenancy, regions: AbstractSet[str]) -> None:
        self.tenancy = tenancy
        self.store = tenancy.store
        self.regions = regions  # every region a deployment is in

    # -- validation ---------------------------------------------------------------------

    def _check(
        self, limits: Limits | None, regions: list[str] | None, models: list[str] | None
    ) -> None:
        try:
            _check_one_limits(limits, "limits")
        except ConfigError as exc:
            raise InvalidRequest(str(exc), param="limits") from None
        for r in regions or ():
            if r not in self.regions:
                known = ", ".join(sorted(self.regions)) or "none: no deployment has a region"
                raise InvalidRequest(
                    f"Unknown region {r!r} (deployments are in: {known}).", param="regions"
                )
        if models is not None and not models:
            raise InvalidRequest("models: give at least one, or null for all", param="models")

    async def _team_exists(self, team: str | None) -> None:
        if team is not None and await self.store.get("team", team) is None:
            raise InvalidRequest(f"Unknown team {team!r}: create it first.", param="team")

    async def _publish(self, message: str) -> None:
        directory = self.tenancy.directory
        if directory is not None:
            directory.invalidate(message)
        await self.store.publish(message)

    # -- keys ----------------------------------------------------------------------------

    async def _key(self, key_id: str) -> rec.KeyRecord:
        raw = await self.store.get("key", key_id) if len(key_id) <= 64 else None
        if raw is None:
            raise NotFound(f"No API key with id {key_id[:64]!r}.", param="id")
        return rec.decode_key(raw)

    def _digest(self, secret: str) -> str:
        directory = self.tenancy.directory
        assert directory is not None  # the admin API exists only with virtual keys
        return directory.digest(secret)

    async def create_key(self, body: rec.KeyCreate) -> dict[str, Any]:
        self._check(body.limits, body.regions, body.models)
        await self._team_exists(body.team)
        now = time.time()
        expires = body.expires_at
        if body.expires_in is not None:
            expires = now + body.expires_in
        secret = rec.new_secret()
        record = rec.KeyRecord(
            id=rec.new_key_id(),
            name=body.name,
            hint=rec.hint(secret),
            digest=self._digest(secret),
            team=body.team,
            models=body.models,
            limits=body.limits,
            budget=body.budget,
            regions=body.regions,
            expires_at=expires,
            metadata=body.metadata,
            created_at=now,
            updated_at=now,
        )
        await self._put_key(record, None)
        return await self._key_view(record, key=secret)

    async def _put_key(self, record: rec.KeyRecord, old_digest: str | None) -> None:
        await self.store.put(
            "key",
            record.id,
            rec.encode(record),
            digest=record.digest,
            drop_digest=old_digest,
        )
        for d in {record.digest, old_digest} - {None}:
            await self._publish(f"k:{d}")

    async def list_keys(self) -> list[dict[str, Any]]:
        keys = [rec.decode_key(r) for r in await self.store.all("key")]
        keys.sort(key=lambda k: k.created_at)
        used = await self._used([(k.id, "key", k.budget) for k in keys])
        return [self._key_dict(k, used.get(k.id)) for k in keys]

    async def get_key(self, key_id: str) -> dict[str, Any]:
        return await self._key_view(await self._key(key_id))

    async def update_key(self, key_id: str, body: rec.KeyUpdate) -> dict[str, Any]:
        old = await self._key(key_id)
        if old.revoked_at is not None:
            raise InvalidRequest("This API key is revoked; it cannot change.", param="id")
        changes = _changes(body)
        merged = msgspec.structs.replace(old, **changes)
        self._check(merged.limits, merged.regions, merged.models)
        if "team" in changes:
            await self._team_exists(merged.team)
        record = msgspec.structs.replace(merged, updated_at=time.time(), rev=old.rev + 1)
        await self._put_key(record, None)
        return await self._key_view(record)

    async def rotate_key(self, key_id: str) -> dict[str, Any]:
        old = await self._key(key_id)
        if old.revoked_at is not None:
            raise InvalidRequest("This API key is revoked; create a new one.", param="id")
        secret = rec.new_secret()
        record = msgspec.structs.replace(
            old,
            digest=self._digest(secret),
            hint=rec.hint(secret),
            updated_at=time.time(),
            rev=old.rev + 1,
        )
        await self._put_key(record, old.digest)
        return await self._key_view(record, key=secret)

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        old = await self._key(key_id)
        if old.revoked_at is not None:
            return await self._key_view(old)
        now = time.time()
        record = msgspec.structs.replace(
            old, digest=None, revoked_at=now, updated_at=now, rev=old.rev + 1
        )
        await self._put_key(record, old.digest)
        return await self._key_view(record)

    async def _key_view(self, k: rec.KeyRecord, **extra: Any) -> dict[str, Any]:
        used = await self._used([(k.id, "key", k.budget)])
        return self._key_dict(k, used.get(k.id), **extra)

    def _key_dict(
        self, k: rec.KeyRecord, used: dict[str, Any] | None, **extra: Any
    ) -> dict[str, Any]:
        if k.revoked_at is not None:
            status = "revoked"
        elif k.expires_at is not None and k.expires_at <= time.time():
            status = "expired"
        else:
            status = "active"
        out = _view(k, status=status, **extra)
        if used is not None:
            out["budget"] = {**out["budget"], **used}
        return out

    async def _used(
        self, items: list[tuple[str, str, rec.BudgetSpec | None]]
    ) -> dict[str, dict[str, Any]]:
        """The current period's budget counters of ``(id, scope, budget)`` items."""
        now = time.time()
        todo = []
        for ident, scope, spec in items:
            if spec is not None:
                per = rec.period(spec.period, now)
                todo.append((ident, spec, per, budget_key(scope, ident, per.ident)))
        values = await self.store.budget_used([t[3] for t in todo])
        out = {}
        for (ident, spec, per, _), used in zip(todo, values, strict=True):
            limit = rec.to_nano(spec.usd)
            out[ident] = {
                "used_usd": float(fmt_usd(used)),
                "remaining_usd": float(fmt_usd(max(0, limit - used))),
                "reset_at": per.reset_at,
            }
        return out

    # -- teams ---------------------------------------------------------------------------

    async def _team(self, team_id: str) -> rec.TeamRecord:
        raw = await self.store.get("team", team_id) if len(team_id) <= 64 else None
        if raw is None:
            raise NotFound(f"No team with id {team_id[:64]!r}.", param="id")
        return rec.decode_team(raw)

    async def create_team(self, body: rec.TeamCreate) -> dict[str, Any]:
        self._check(body.limits, body.regions, body.models)
        if body.id in ("none", "other"):  # the metric's labels for no team and the overflow
            raise InvalidRequest(f"Team id {body.id!r} is reserved.", param="id")
        if await self.store.get("team", body.id) is not None:
            raise InvalidRequest(f"Team {body.id!r} exists already.", param="id", status=409)
        now = time.time()
        team = rec.TeamRecord(
            id=body.id,
            models=body.models,
            limits=body.limits,
            budget=body.budget,
            regions=body.regions,
            metadata=body.metadata,
            created_at=now,
            updated_at=now,
        )
        await self.store.put("team", team.id, rec.encode(team))
        await self._publish(f"t:{team.id}")
        return await self._team_view(team)

    async def list_teams(self) -> list[dict[str, Any]]:
        teams = sorted(
            (rec.decode_team(r) for r in await self.store.all("team")), key=lambda t: t.id
        )
        used = await self._used([(t.id, "team", t.budget) for t in teams])
        keys = [rec.decode_key(r) for r in await self.store.all("key")]
        return [self._team_dict(t, used.get(t.id), keys) for t in teams]

    async def get_team(self, team_id: str) -> dict[str, Any]:
        return await self._team_view(await self._team(team_id))

    async def update_team(self, team_id: str, body: rec.TeamUpdate) -> dict[str, Any]:
        old = await self._team(team_id)
        changes = _changes(body)
        merged = msgspec.structs.replace(old, **changes)
        self._check(merged.limits, merged.regions, merged.models)
        team = msgspec.structs.replace(merged, updated_at=time.time(), rev=old.rev + 1)
        await self.store.put("team", team.id, rec.encode(team))
        await self._publish(f"t:{team.id}")
        return await self._team_view(team)

    async def delete_team(self, team_id: str) -> dict[str, Any]:
        team = await self._team(team_id)
        members = [
            k for k in map(rec.decode_key, await self.store.all("key"))
            if k.team == team_id and k.revoked_at is None
        ]  # fmt: skip
        if members:
            raise InvalidRequest(
                f"Team {team_id!r} still has {len(members)} active key(s); move or revoke "
                "them first.",
                param="id",
                status=409,
            )
        await self.store.put("team", team_id, None)
        await self._publish(f"t:{team_id}")
        return _view(team, deleted=True)

    async def _team_view(self, t: rec.TeamRecord) -> dict[str, Any]:
        used = await self._used([(t.id, "team", t.budget)])
        keys = [rec.decode_key(r) for r in await self.store.all("key")]
        return self._team_dict(t, used.get(t.id), keys)

    def _team_dict(
        self, t: rec.TeamRecord, used: dict[str, Any] | None, keys: list[rec.KeyRecord]
    ) -> dict[str, Any]:
        members = [k.id for k in keys if k.team == t.id and k.revoked_at is None]
        out = _view(t, keys=members)
        if used is not None:
            out["budget"] = {**out["budget"], **used}
        return out

    # -- spend ---------------------------------------------------------------------------

    async def spend(
        self,
        key: str | None,
        team: str | None,
        model: str | None,
        start: str | None,
        end: str | None,
    ) -> dict[str, Any]:
        """Totals and a per-day series from the ledger (UTC days, both ends included)."""
        last = _date(end, "to") if end else datetime.now(UTC).date()
        first = _date(start, "from") if start else last - timedelta(days=29)
        if first > last:
            raise InvalidRequest("from: must not be after to", param="from")
        if (last - first).days >= MAX_DAYS:
            raise InvalidRequest(f"at most {MAX_DAYS} days at once", param="from")
        for param, given in (("key", key), ("team", team)):
            if given is not None and not 0 < len(given) <= 64:
                raise InvalidRequest(f"{param}: 1 to 64 characters", param=param)
        entity = f"key:{key}" if key else f"team:{team}" if team else "all"
        ledger = self.tenancy.ledger
        rows = await ledger.read(entity, days(first.strftime("%Y%m%d"), last.strftime("%Y%m%d")))
        total = _Sum()
        by_model: dict[str, _Sum] = {}
        series = []
        for day, fields in rows.items():
            daily = _Sum()
            for field, value in fields.items():
                name, _, what = field.rpartition("|")
                if model is not None and name != model:
                    continue
                for s in (daily, total, by_model.setdefault(name, _Sum())):
                    s.add(what, value)
            series.append({"date": f"{day[:4]}-{day[4:6]}-{day[6:]}", **daily.view(brief=True)})
        return {
            "key": key,
            "team": team,
            "model": model,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "total": total.view(),
            "by_model": {m: s.view() for m, s in sorted(by_model.items())},
            "days": series,
        }


def _date(value: str, param: str) -> Any:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise InvalidRequest(f"{param}: expected a date YYYY-MM-DD", param=param) from None


class _Sum:
    """Ledger fields added up: nano-USD and tokens by class, requests, unpriced."""

    def __init__(self) -> None:
        self.nano = dict.fromkeys(CLASSES, 0)
        self.tokens = dict.fromkeys(CLASSES, 0)
        self.requests = 0
        self.unpriced = 0

    def add(self, what: str, value: int) -> None:
        kind, _, cls = what.partition(":")
        if kind == "usd" and cls in self.nano:
            self.nano[cls] += value
        elif kind == "tok" and cls in self.tokens:
            self.tokens[cls] += value
        elif what == "requests":
            self.requests += value
        elif what == "unpriced":
            self.unpriced += value

    def view(self, brief: bool = False) -> dict[str, Any]:
        total = sum(self.nano.values())
        out: dict[str, Any] = {
            "usd": float(fmt_usd(total)),
            "nano_usd": total,
            "requests": self.requests,
            "unpriced_requests": self.unpriced,
        }
        if not brief:
            out["usd_by_class"] = {c: float(fmt_usd(n)) for c, n in self.nano.items()}
            out["tokens"] = dict(self.tokens)
        return out
