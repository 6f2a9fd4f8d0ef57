"""The admin API under ``/admin`` (virtual keys, teams, spend) and its page.

Mounted when ``GATEWAY_MASTER_KEY`` is set, unless ``GATEWAY_ADMIN=off``. Every
route but the page's login and its static files needs the master key, as
``Authorization: Bearer`` or ``x-api-key`` (compared in constant time, as digests),
or the page's session cookie: 401 ``authentication_error`` otherwise. Errors have
the OpenAI shape. Bodies are JSON, checked field by field (unknown fields are
refused), and a 400 names the field.

=======  ==============================  ===============================================
POST     /admin/keys                     create; the answer holds the secret (``key``), once
GET      /admin/keys                     list (no secrets)
GET      /admin/keys/{id}                one key, with its budget's use this period
PATCH    /admin/keys/{id}                change name, team, models, limits, budget, regions,
                                         expiry, metadata (``null`` clears a field)
POST     /admin/keys/{id}/rotate         a new secret (shown once); the old one stops at once
POST     /admin/keys/{id}/revoke         revoke (``DELETE /admin/keys/{id}`` too)
POST     /admin/teams                    create (``id``, models, limits, budget, regions)
GET      /admin/teams[/{id}]             list / one (its active keys, budget use)
PATCH    /admin/teams/{id}               change
DELETE   /admin/teams/{id}               delete (409 while it has active keys)
GET      /admin/spend                    ``?key=&team=&model=&from=&to=``: totals, per day
GET      /admin/ui                       the page (a login form until signed in)
=======  ==============================  ===============================================

The page signs in by posting the master key to ``/admin/login``, which sets an
``HttpOnly``, ``SameSite=Strict`` cookie valid for 8 hours: an HMAC of its expiry
under a key derived from the master key (changing the master key signs everyone
out). A request authenticated by the cookie must also carry ``x-gateway-admin: 1``
(a header a cross-site form cannot send), so the cookie alone cannot drive the API.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from importlib import resources
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

import msgspec
from litestar import Controller, Request, Response, Router, delete, get, patch, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.params import Parameter
from litestar.types import Guard

from gateway.errors import AuthenticationFailed, InvalidRequest
from gateway.pipeline.auth import presented_key
from gateway.state import Gateway
from gateway.tenants import records as rec
from gateway.tenants.admin import TenantAdmin

__all__ = ["admin_routes", "master_key_ok"]

T = TypeVar("T")
COOKIE = "gw_admin"
SESSION_S = 8 * 3600
_encode = msgspec.json.Encoder().encode
_ASSETS = {
    "admin.js": "text/javascript; charset=utf-8",
    "admin.css": "text/css; charset=utf-8",
}


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def master_key_ok(gw: Gateway, presented: str | None) -> bool:
    master = gw.settings.master_key
    if master is None or not presented or len(presented) > 4096:
        return False
    # Digests first: equal lengths, so the comparison's time says nothing about the key.
    return hmac.compare_digest(_sha256(presented), _sha256(master.reveal()))


def _cookie_key(gw: Gateway) -> bytes:
    master = gw.settings.master_key
    assert master is not None
    return hmac.new(master.reveal().encode(), b"gateway admin session", hashlib.sha256).digest()


def _session_cookie(gw: Gateway, now: float) -> str:
    expiry = str(int(now) + SESSION_S)
    mac = hmac.new(_cookie_key(gw), expiry.encode(), hashlib.sha256).hexdigest()
    return f"{expiry}.{mac}"


def _session_ok(gw: Gateway, value: str | None) -> bool:
    if not value or len(value) > 200 or "." not in value:
        return False
    expiry, _, mac = value.partition(".")
    want = hmac.new(_cookie_key(gw), expiry.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, want) and expiry.isdigit() and int(expiry) > time.time()


def _guard(gw: Gateway) -> Guard:
    def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if master_key_ok(gw, presented_key(connection.headers)):
            return
        if connection.headers.get("x-gateway-admin") == "1" and _session_ok(
            gw, connection.cookies.get(COOKIE)
        ):
            return
        raise AuthenticationFailed(
            "The admin API needs the master key (Authorization: Bearer <GATEWAY_MASTER_KEY>).",
            code="invalid_api_key",
        )

    return admin_guard


def _json(obj: Any, status: int = 200) -> Response[bytes]:
    return Response(_encode(obj), status_code=status, media_type="application/json")


async def _body(request: Request[Any, Any, Any], kind: type[T]) -> T:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rpartition("$.")[2].rstrip("`").split("[")[0].split(".")[0] or None
        raise InvalidRequest(f"Invalid body: {text}", param=field) from None
    except msgspec.DecodeError:
        raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None


def _admin(gw: Gateway) -> TenantAdmin:
    return TenantAdmin(gw.tenants, gw.registry.regions)  # the registry's: reloads replace it


class KeysController(Controller):
    path = "/keys"

    @post("/", status_code=201)
    async def create(self, request: Request[Any, Any, Any], gw: Gateway) -> Response[bytes]:
        body = await _body(request, rec.KeyCreate)
        return _json(await _admin(gw).create_key(body), 201)

    @get("/")
    async def list_keys(self, gw: Gateway) -> Response[bytes]:
        return _json({"data": await _admin(gw).list_keys()})

    @get("/{key_id:str}")
    async def get_key(self, key_id: str, gw: Gateway) -> Response[bytes]:
        return _json(await _admin(gw).get_key(key_id))

    @patch("/{key_id:str}")
    async def update(
        self, key_id: str, request: Request[Any, Any, Any], gw: Gateway
    ) -> Response[bytes]:
        body = await _body(request, rec.KeyUpdate)
        return _json(await _admin(gw).update_key(key_id, body))

    @post("/{key_id:str}/rotate", status_code=200)
    async def rotate(self, key_id: str, gw: Gateway) -> Response[bytes]:
        return _json(await _admin(gw).rotate_key(key_id))

    @post("/{key_id:str}/revoke", status_code=200)
    async def revoke(self, key_id: str, gw: Gateway) -> Response[bytes]:
        return _json(await _admin(gw).revoke_key(key_id))

    @delete("/{key_id:str}", status_code=200)
    async def delete_key(self, key_id: str, gw: Gateway) -> Response[bytes]:
        return _json(await _admin(gw).revoke_key(key_id))


class TeamsController(Controller):
    path = "/teams"

    @post("/", status_code=201)
    async def create(self, request: Request[Any, Any, Any], gw: Gateway) -> Response[bytes]:
        body = await _body(request, rec.TeamCreate)
        return _json(await _admin(gw).create_team(body), 201)

    @get("/")
    async def list_teams(self, gw: Gateway) -> Response[bytes]:
        return _json({"data": await _admin(gw).list_teams()})

    @get("/{team_id:str}")
    async def get_team(self, team_id: str, gw: Gateway) -> Response[bytes]:
        return _json(await _admin(gw).get_team(team_id))

    @patch("/{team_id:str}")
    async def update(
        self, team_id: str, request: Request[Any, Any, Any], gw: Gateway
    ) -> Response[bytes]:
        body = await _body(request, rec.TeamUpdate)
        return _json(await _admin(gw).update_team(team_id, body))

    @delete("/{team_id:str}", status_code=200)
    async def delete_team(self, team_id: str, gw: Gateway) -> Response[bytes]:
        return _json(await _admin(gw).delete_team(team_id))


@get("/spend")
async def spend(
    gw: Gateway,
    key: str | None = None,
    team: str | None = None,
    model: str | None = None,
    start: Annotated[str | None, Parameter(query="from")] = None,
    end: Annotated[str | None, Parameter(query="to")] = None,
) -> Response[bytes]:
    return _json(await _admin(gw).spend(key, team, model, start, end))


# -- the page ---------------------------------------------------------------------------


def _asset(name: str) -> bytes:
    return resources.files("gateway.api").joinpath("admin_ui", name).read_bytes()


def _page(name: str) -> Response[bytes]:
    return Response(
        _asset(name),
        media_type="text/html; charset=utf-8",
        headers={
            "cache-control": "no-store",
            "content-security-policy": "default-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'",
            "x-frame-options": "DENY",
        },
    )


@get("/ui")
async def ui(request: Request[Any, Any, Any], gw: Gateway) -> Response[bytes]:
    """The page when signed in (cookie or master key), else the login form."""
    signed_in = _session_ok(gw, request.cookies.get(COOKIE)) or master_key_ok(
        gw, presented_key(request.headers)
    )
    return _page("index.html" if signed_in else "login.html")


@get("/ui/{name:str}")
async def ui_asset(name: str) -> Response[bytes]:
    media = _ASSETS.get(name)
    if media is None:
        return _json(
            {"error": {"message": "Not found", "type": "invalid_request_error",
                       "param": None, "code": "not_found"}},
            404,
        )  # fmt: skip
    return Response(_asset(name), media_type=media, headers={"cache-control": "no-cache"})


@post("/login", status_code=303)
async def login(request: Request[Any, Any, Any], gw: Gateway) -> Response[bytes]:
    """The login form posts ``key`` (form-encoded); a wrong key goes back to the form."""
    raw = await request.body()
    fields = parse_qs(raw.decode("utf-8", "replace")) if len(raw) <= 8192 else {}
    ok = master_key_ok(gw, (fields.get("key") or [""])[0])
    response: Response[bytes] = Response(
        b"", status_code=303, headers={"location": "/admin/ui" if ok else "/admin/ui?failed=1"}
    )
    if ok:
        response.set_cookie(
            COOKIE,
            _session_cookie(gw, time.time()),
            max_age=SESSION_S,
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


@post("/logout", status_code=303)
async def logout() -> Response[bytes]:
    response: Response[bytes] = Response(b"", status_code=303, headers={"location": "/admin/ui"})
    response.delete_cookie(COOKIE, path="/admin")
    return response


def admin_routes(gw: Gateway) -> list[Router]:
    """The API (master key or session) and the page (its login open to all)."""
    api = Router(
        path="/admin",
        route_handlers=[KeysController, TeamsController, spend],
        guards=[_guard(gw)],
    )
    return [api, Router(path="/admin", route_handlers=[ui, ui_asset, login, logout])]
