"""The admin API end to end over real sockets: one gateway process on real Redis
(standalone, and a 3-primary cluster for the flow whose keys span slots: records in
``{tenants}``, the ledger in ``{spend}``, budgets in ``{rl}``, sessions anywhere).

Covers: authentication of /admin, keys (secret once, list, get, update, rotate,
revoke, expiry, models), teams (limits and budgets applied with the key's), the
cost header against the ledger, unpriced models, /admin/spend's filters, error
shapes, and that secrets never reach logs, metrics or listings.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProc, metric_sum, wait_until
from tests.tenants.conftest import MASTER, GatewayMaker, admin, chat

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["redis", "cluster"])
def gw(request: pytest.FixtureRequest, make_gateway: GatewayMaker) -> GatewayProc:
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = request.getfixturevalue("redis_cluster").url
    return make_gateway(url)


def test_admin_needs_the_master_key(gw: GatewayProc) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": MASTER + "x"}):
        r = httpx.get(gw.url + "/admin/keys", headers=headers, timeout=5)
        assert r.status_code == 401
        assert _error(r)["type"] == "authentication_error"
    assert httpx.get(gw.url + "/admin/keys", headers={"x-api-key": MASTER}).status_code == 200
    # a session cookie alone (without the page's header) does not drive the API
    login = httpx.post(gw.url + "/admin/login", data={"key": MASTER}, timeout=5)
    assert login.status_code == 303 and "gw_admin" in login.cookies
    cookies = {"gw_admin": login.cookies["gw_admin"]}
    assert httpx.get(gw.url + "/admin/keys", cookies=cookies).status_code == 401
    r = httpx.get(gw.url + "/admin/keys", cookies=cookies, headers={"x-gateway-admin": "1"})
    assert r.status_code == 200
    bad = httpx.post(gw.url + "/admin/login", data={"key": "nope"}, timeout=5)
    assert bad.status_code == 303 and "gw_admin" not in bad.cookies
    # the master key is no API key
    assert chat(gw, MASTER).status_code == 401


def test_key_lifecycle(gw: GatewayProc) -> None:
    with admin(gw) as a:
        made = a.post("/keys", json={"name": "alice", "metadata": {"owner": "ml"}})
        assert made.status_code == 201, made.text
        key = made.json()
        secret, kid = key["key"], key["id"]
        assert secret.startswith("sk-gw-") and len(secret) == 49
        assert key["hint"] == "sk-gw-…" + secret[-4:] and "digest" not in key
        assert chat(gw, secret).status_code == 200
        assert secret not in a.get("/keys").text and secret not in a.get(f"/keys/{kid}").text
        assert a.get(f"/keys/{kid}").json()["metadata"] == {"owner": "ml"}
        # update: only some models
        r = a.patch(f"/keys/{kid}", json={"models": ["free"]})
        assert r.status_code == 200 and r.json()["models"] == ["free"]
        denied = chat(gw, secret)
        assert denied.status_code == 403 and _error(denied)["code"] == "model_not_allowed"
        assert chat(gw, secret, model="free").status_code == 200
        # rotate: the old secret stops at once, the new one works
        rotated = a.post(f"/keys/{kid}/rotate").json()
        assert rotated["id"] == kid and rotated["key"] != secret
        assert chat(gw, secret, model="free").status_code == 401
        assert chat(gw, rotated["key"], model="free").status_code == 200
        # revoke
        revoked = a.post(f"/keys/{kid}/revoke").json()
        assert revoked["status"] == "revoked" and revoked["revoked_at"]
        r = chat(gw, rotated["key"], model="free")
        assert r.status_code == 401 and _error(r)["code"] == "invalid_api_key"
        assert a.patch(f"/keys/{kid}", json={"name": "x"}).status_code == 400
        assert a.get("/keys/vk-nope").status_code == 404
        # expiry
        short = a.post("/keys", json={"name": "brief", "expires_in": 1}).json()
        assert chat(gw, short["key"], model="free").status_code == 200
        time.sleep(1.1)
        r = chat(gw, short["key"], model="free")
        assert r.status_code == 401 and "expired" in _error(r)["message"]
        assert a.get(f"/keys/{short['id']}").json()["status"] == "expired"


def test_bad_bodies_name_the_field(gw: GatewayProc) -> None:
    with admin(gw) as a:
        for body, param in [
            ({"name": "x", "colour": 1}, None),
            ({"name": "x", "budget": {"usd": -1}}, "budget"),
            ({"name": "x", "limits": {"rpm": 0}}, "limits"),
            ({"name": "x", "regions": ["mars"]}, "regions"),
            ({"name": "x", "team": "no-such-team"}, "team"),
            ({}, None),
        ]:
            r = a.post("/keys", json=body)
            assert r.status_code == 400, (body, r.text)
            err = _error(r)
            assert err["type"] == "invalid_request_error"
            if param:
                assert err["param"] == param, (body, err)
        r = a.post("/keys", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and _error(r)["code"] == "invalid_json"


def test_cost_header_matches_the_ledger(gw: GatewayProc) -> None:
    with admin(gw) as a:
        team = f"t{int(time.time() * 1000) % 10**8}"
        assert a.post("/teams", json={"id": team}).status_code == 201
        key = a.post("/keys", json={"name": "costly", "team": team}).json()
        costs = []
        for n in (3, 7, 11):
            r = chat(gw, key["key"], max_tokens=n)
            assert r.status_code == 200
            usage = r.json()["usage"]
            # input $1000/M, output $2000/M, exact mock usage
            want = usage["prompt_tokens"] * 1000e-6 + usage["completion_tokens"] * 2000e-6
            assert float(r.headers["x-gateway-cost-usd"]) == pytest.approx(want, abs=1e-9)
            assert r.headers["x-gateway-cost-usd-classes"].startswith("input=")
            costs.append(r.headers["x-gateway-cost-usd"])
        nano = sum(round(float(c) * 1e9) for c in costs)
        for query in (f"key={key['id']}", f"team={team}", f"key={key['id']}&model=priced"):
            spend = a.get(f"/spend?{query}").json()
            assert spend["total"]["nano_usd"] == nano, query
            assert spend["total"]["requests"] == 3
            assert spend["days"][-1]["nano_usd"] == nano
            assert spend["total"]["tokens"]["output"] == 21
        assert a.get(f"/spend?key={key['id']}&model=other").json()["total"]["requests"] == 0
        everything = a.get("/spend").json()
        assert everything["by_model"]["priced"]["nano_usd"] >= nano
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert (
            a.get(f"/spend?key={key['id']}&from={today}&to={today}").json()["days"][0]["nano_usd"]
            == nano
        )
        assert a.get("/spend?from=2026-13-01").status_code == 400
        assert a.get("/spend?from=2020-01-01&to=2026-01-01").status_code == 400
        # the metric carries the team (a bounded label), never the key
        text = gw.metrics()
        assert metric_sum(text, "llm_cost_usd_total", team=team) == pytest.approx(nano / 1e9)
        assert key["id"] not in text and key["key"] not in text


def test_unpriced_model_has_no_cost_header(gw: GatewayProc, make_gateway: GatewayMaker) -> None:
    with admin(gw) as a:
        key = a.post("/keys", json={"name": "free"}).json()
        r = chat(gw, key["key"], model="free")
        assert r.status_code == 200 and r.headers["x-gateway-cost-usd"] == "0"
        # unpriced: the upstream (port 9) refuses, so no answer and nothing charged
        r = chat(gw, key["key"], model="unpriced")
        assert r.status_code == 502 and "x-gateway-cost-usd" not in r.headers


def test_team_limits_and_budgets_apply_with_the_keys(gw: GatewayProc) -> None:
    with admin(gw) as a:
        team = f"tb{int(time.time() * 1000) % 10**8}"
        body = {"id": team, "limits": {"rpm": 3}, "budget": {"usd": 0.1, "period": "day"}}
        assert a.post("/teams", json=body).status_code == 201
        k1 = a.post("/keys", json={"name": "k1", "team": team}).json()["key"]
        k2 = a.post("/keys", json={"name": "k2", "team": team}).json()["key"]
        # rpm 3 shared by the team's keys
        statuses = [chat(gw, k, model="free").status_code for k in (k1, k2, k1, k2)]
        assert statuses == [200, 200, 200, 429]
        assert a.patch(f"/teams/{team}", json={"limits": None}).status_code == 200
        # the team's $0.1 a day, shared: each request holds up to 8 + 10 tokens ($0.028)
        ok = 0
        for k in (k1, k2) * 3:
            r = chat(gw, k, max_tokens=10)
            if r.status_code == 200:
                ok += 1
            else:
                assert r.status_code == 429
                err = _error(r)
                assert err["type"] == "insufficient_quota" and err["code"] == "insufficient_quota"
                assert f"Team '{team}'" in err["message"] and "resets at" in err["message"]
                assert int(r.headers["retry-after"]) > 0
        assert ok == 3  # 3 x 0.028 = 0.084; a fourth would pass 0.1
        view = a.get(f"/teams/{team}").json()
        assert view["budget"]["used_usd"] == pytest.approx(0.084)
        assert len(view["keys"]) == 2
        assert a.delete(f"/teams/{team}").status_code == 409
        assert metric_sum(gw.metrics(), "llm_budget_refusals_total", scope="team") >= 3


def test_key_budget_refuses_what_could_pass_it(gw: GatewayProc) -> None:
    with admin(gw) as a:
        key = a.post("/keys", json={"name": "b", "budget": {"usd": 0.05, "period": "total"}})
        secret = key.json()["key"]
        assert chat(gw, secret, max_tokens=10).status_code == 200  # holds and costs 0.028
        r = chat(gw, secret, max_tokens=10)
        assert r.status_code == 429
        err = _error(r)
        assert "This API key's total budget of $0.05 has $0.022 left" in err["message"]
        assert "retry-after" not in r.headers  # a total budget does not reset
        assert chat(gw, secret, max_tokens=5).status_code == 200  # 8k + 5 x 2k = 0.018 fits
        # with no max_tokens the mock's own cap (20 tokens) is the maximum held
        assert chat(gw, secret).status_code == 429


def test_regions_pin_a_key(gw: GatewayProc) -> None:
    with admin(gw) as a:
        eu = a.post("/keys", json={"name": "eu", "regions": ["eu"]}).json()["key"]
        for _ in range(6):
            r = chat(gw, eu, model="spread")
            assert r.status_code == 200 and r.json()["model"] == "mock-a"
        r = chat(gw, eu, model="free")  # us only
        assert r.status_code == 403
        err = _error(r)
        assert err["code"] == "region_not_allowed" and "(eu)" in err["message"]
        budgeted = a.post("/keys", json={"name": "bud", "budget": {"usd": 1}}).json()["key"]
        r = chat(gw, budgeted, model="unpriced")
        assert r.status_code == 403 and _error(r)["code"] == "model_unpriced"


def test_secrets_never_logged(gw: GatewayProc) -> None:
    with admin(gw) as a:
        secret = a.post("/keys", json={"name": "quiet"}).json()["key"]
        chat(gw, secret)
        chat(gw, secret + "x")
    assert wait_until(lambda: '"route":"/admin"' in gw.proc.stdout(), timeout=5)
    out = gw.proc.stdout() + gw.proc.stderr()
    assert secret[6:] not in out and MASTER not in out


def test_admin_can_be_turned_off(
    make_gateway: GatewayMaker, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_server").url
    on = make_gateway(url)
    off = make_gateway(url, GATEWAY_ADMIN="off")
    with admin(off) as a:
        r = a.get("/keys")
        assert r.status_code == 404 and _error(r)["code"] == "not_found"
    assert httpx.get(off.url + "/admin/ui").status_code == 404
    with admin(on) as a:  # a key made on another replica works here
        secret = a.post("/keys", json={"name": "elsewhere"}).json()["key"]
    assert chat(off, secret, model="free").status_code == 200
