"""Clients that misbehave on purpose, over real sockets against a real gateway process.

Half-sent bodies, invented methods and paths, absurd integers and headers, clients
that hang up while the gateway waits on the provider (streamed and not). Whatever
they do, the gateway must answer with a 4xx or nothing, log no traceback, count a
client that left as 499 (not a 5xx), stop working for it at once (no upstream call
left running, no retries or fallbacks, its rate-limit reservation given back, its
cache fill released) and never grow a metric series from what a client sent.

The upstream is ``tests.fakes.fault_upstream``: ``fault-stall-<X>s`` answers after X
seconds and counts a client (the gateway) that closed before (``gone``);
``fault-stallbody-<X>s`` streams its role chunk at once and its content after X s.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.harness import GatewayProc, metric_sum, parse_metrics, wait_until
from tests.resilience.helpers import Fault, start_fault_upstream

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
BODY_ROUTES = (CHAT, "/v1/embeddings", "/v1/messages", "/v1/messages/count_tokens")
TPM = 100_000
STALL = 20  # seconds an upstream stalls: far longer than any test waits


def config(fault: Fault) -> str:
    def dep(model: str, **extra: Any) -> dict[str, Any]:
        return {"provider": "openai", "model": model, "base_url": fault.url} | extra

    models = [
        {"alias": "echo", "deployments": [dep("fault-ok")]},
        {"alias": "stall", "deployments": [dep(f"fault-stall-{STALL}s")]},
        # a stream that never commits: each attempt times out after its first token wait,
        # is retried, then the fallback is tried; all of it within about three seconds
        {
            "alias": "loop",
            "retry": {"attempts": 3},
            "fallbacks": ["loop-fallback"],
            "deployments": [
                dep(f"fault-stallbody-{STALL}s", timeout={"first_token": 1, "read": 30})
            ],
        },
        {"alias": "loop-fallback", "deployments": [dep("fault-stallbody-99s")]},
        {
            "alias": "cached",
            "cache": {"ttl": 60},
            "deployments": [dep(f"fault-stall-{STALL + 1}s")],
        },
        {"alias": "trickle", "deployments": [dep("fault-trickle-50x200ms")]},
    ]
    return json.dumps(
        {
            "routing": {"retry": {"attempts": 3, "backoff": 0.05, "max_backoff": 0.1}},
            "limits": {"default_key": {"tpm": TPM}},
            "models": models,
        }
    )


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fault]:
    with start_fault_upstream(Path(tmp_path_factory.mktemp("hostile")) / "logs") as f:
        yield f


@pytest.fixture(scope="module")
def gw(
    gateway_factory: GatewayFactory, fault: Fault, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProc]:
    path = Path(tmp_path_factory.mktemp("hostile-config")) / "gateway.yaml"
    path.write_text(config(fault))  # JSON is YAML
    with gateway_factory(
        {
            "GATEWAY_CONFIG": str(path),
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": fault.url,
        },
        name="gateway-hostile",
    ) as g:
        yield g


@pytest.fixture(autouse=True)
def clean_after(gw: GatewayProc) -> Iterator[None]:
    """Each test leaves no 5xx counted and no traceback or error line in the gateway's log."""
    fives = server_errors(gw)
    out, err = len(gw.proc.stdout()), len(gw.proc.stderr())
    yield
    assert server_errors(gw) == fives, gw.metrics()
    new = gw.proc.stdout()[out:] + gw.proc.stderr()[err:]
    assert "Traceback" not in new, new[-3000:]
    levels = [json.loads(x).get("level") for x in new.splitlines() if x.startswith("{")]
    assert not {"error", "critical"} & set(levels), new[-3000:]


def server_errors(gw: GatewayProc) -> float:
    return sum(
        v
        for n, labels, v in parse_metrics(gw.metrics())
        if n == "http_requests_total" and labels["status"].startswith("5")
    )


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


def raw_request(
    path: str, body: bytes, *, rid: str, key: str = "hostile", length: int | None = None
) -> bytes:
    """A POST as bytes; ``key`` is the bearer (with no ``keys:`` configured, each key is
    its own tenant: its own rate-limit buckets and cache entries)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nx-request-id: {rid}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def connect(gw: GatewayProc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def rid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def count_499(gw: GatewayProc, route: str = CHAT) -> float:
    return metric_sum(gw.metrics(), "http_requests_total", route=route, status="499")


# -- 7: a body that never arrives in full -----------------------------------------------


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_half_sent_body_is_499_not_500(gw: GatewayProc, route: str) -> None:
    before = count_499(gw, route)
    ident = rid("half")
    with connect(gw) as s:
        s.sendall(raw_request(route, b'{"model": "echo", "messa', rid=ident, length=5000))
        time.sleep(0.2)  # the gateway is reading the body when the client goes
    line = gw.wait_for_access(ident)
    assert (line["status"], line["error"]) == (499, "client_closed_request")
    assert line["level"] == "info"
    assert count_499(gw, route) == before + 1


def test_body_short_then_half_closed(gw: GatewayProc) -> None:
    """Content-Length larger than what is sent, then only the write side closed."""
    ident = rid("shut")
    with connect(gw) as s:
        s.sendall(raw_request(CHAT, b"{}", rid=ident, length=100))
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        got = s.recv(65536)  # the read side is open: a 400 reaches it
    assert got.startswith(b"HTTP/1.1 400 "), got
    assert b'"code":"client_closed_request"' in got
    assert gw.wait_for_access(ident)["status"] == 499  # counted as the client's doing


# -- 8: a client that leaves while the gateway waits on the provider ---------------------


def test_non_stream_client_gone_cancels_upstream(gw: GatewayProc, fault: Fault) -> None:
    model = f"fault-stall-{STALL}s"
    gone_before = fault.gone(model)
    m0 = gw.metrics()
    ident = rid("gone")
    with connect(gw) as s:
        s.sendall(raw_request(CHAT, json.dumps(chat("stall")).encode(), rid=ident))
        assert wait_until(lambda: fault.count(model) >= 1, 5)
        time.sleep(0.2)
    # the upstream sees its request closed at once, not when it would have answered
    assert wait_until(lambda: fault.gone(model) == gone_before + 1, 3), fault.stats()
    line = gw.wait_for_access(ident)
    assert (line["status"], line["error"], line["model"]) == (499, "client_closed_request", "stall")
    m1 = gw.metrics()
    for name, labels in (
        ("http_requests_total", {"route": CHAT, "status": "499"}),
        ("llm_provider_requests_total", {"model": "stall", "outcome": "cancelled"}),
    ):
        assert metric_sum(m1, name, **labels) == metric_sum(m0, name, **labels) + 1, name
    assert metric_sum(m1, "llm_provider_errors_total", model="stall") == 0


def test_uncommitted_stream_client_gone_stops_retries_and_fallbacks(
    gw: GatewayProc, fault: Fault
) -> None:
    primary, fallback = f"fault-stallbody-{STALL}s", "fault-stallbody-99s"
    fault.reset()
    ident = rid("loop")
    body = json.dumps(chat("loop", stream=True)).encode()
    with connect(gw) as s:
        s.sendall(raw_request(CHAT, body, rid=ident))
        assert wait_until(lambda: fault.count(primary) >= 1, 5)
        time.sleep(0.3)  # the first attempt waits for its first token (1 s)
    assert wait_until(lambda: fault.gone(primary) == 1, 3), fault.stats()
    assert gw.wait_for_access(ident)["status"] == 499
    # Left alone, the loop would retry the primary at about 1 and 2 s and then fall back.
    time.sleep(3.5)
    assert fault.count(primary) == 1, fault.stats()
    assert fault.count(fallback) == 0, fault.stats()


def test_committed_stream_client_gone(gw: GatewayProc, fault: Fault) -> None:
    """After the first content event the status (200) is sent; the upstream closes."""
    model = "fault-trickle-50x200ms"
    gone_before = fault.gone(model)
    ident = rid("committed")
    with connect(gw) as s:
        s.sendall(raw_request(CHAT, json.dumps(chat("trickle", stream=True)).encode(), rid=ident))
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)
    assert wait_until(lambda: fault.gone(model) == gone_before + 1, 3), fault.stats()
    line = gw.wait_for_access(ident)
    assert (line["status"], line["error"]) == (200, "client_disconnected")


def test_client_gone_refunds_its_reservation(gw: GatewayProc) -> None:
    """A reservation of 60,000 tokens comes back when its client leaves before the answer."""
    key = rid("tenant")  # a fresh key: its own buckets
    body = json.dumps(chat("stall", max_tokens=60_000)).encode()
    with connect(gw) as s:
        s.sendall(raw_request(CHAT, body, rid=key, key=key))
        time.sleep(0.3)
    assert gw.wait_for_access(key)["status"] == 499
    r = httpx.post(
        gw.url + CHAT,
        json=chat("echo", max_tokens=10),
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert r.status_code == 200
    remaining = int(r.headers["x-ratelimit-remaining-tokens"])
    assert remaining > TPM - 1_000, remaining  # not TPM - 60,000


def test_client_gone_releases_the_cache_fill(gw: GatewayProc, fault: Fault) -> None:
    """An identical request waiting on a leader that left goes upstream itself at once."""
    model = f"fault-stall-{STALL + 1}s"
    before = fault.count(model)
    # A body never sent before (the key ignores ``user``, not ``seed``); one tenant.
    body = json.dumps(chat("cached", seed=uuid.uuid4().int % 2**31)).encode()
    leader, follower = rid("leader"), rid("follower")
    with connect(gw) as a, connect(gw) as b:
        a.sendall(raw_request(CHAT, body, rid=leader))
        assert wait_until(lambda: fault.count(model) == before + 1, 5)
        b.sendall(raw_request(CHAT, body, rid=follower))  # waits for the leader's answer
        time.sleep(0.3)
        a.close()
        assert gw.wait_for_access(leader)["status"] == 499
        assert wait_until(lambda: fault.count(model) == before + 2, 3), fault.stats()
    assert gw.wait_for_access(follower)["status"] == 499


# -- 13: absurd integers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "param", "value"),
    [
        (CHAT, "max_tokens", 10**30),
        (CHAT, "max_tokens", 2**63),
        (CHAT, "max_tokens", 2**31),
        (CHAT, "max_completion_tokens", 2**63),
        (CHAT, "max_completion_tokens", 0),
        (CHAT, "n", 10**30),
        (CHAT, "top_logprobs", 2**63),
        (CHAT, "seed", 2**63),
        ("/v1/embeddings", "dimensions", 10**30),
        ("/v1/messages", "max_tokens", 10**30),
        ("/v1/messages", "max_tokens", 2**31),
        ("/v1/messages", "max_tokens", -5),
        ("/v1/messages", "top_k", 2**63),
    ],
)
def test_absurd_integers_are_400_naming_the_parameter(
    gw: GatewayProc, route: str, param: str, value: int
) -> None:
    if route == "/v1/embeddings":
        body: dict[str, Any] = {"model": "echo", "input": "x", param: value}
    elif route == "/v1/messages":
        body = {"model": "echo", "max_tokens": 16, **chat("echo"), param: value}
    else:
        body = chat("echo", **{param: value})
    r = httpx.post(gw.url + route, content=json.dumps(body), timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert param in err["message"]
    if route != "/v1/messages":
        assert err["param"] == param
    else:
        assert r.json()["type"] == "error"


def test_absurd_nested_integers(gw: GatewayProc) -> None:
    cases = [
        ("/v1/embeddings", {"model": "echo", "input": [[1, 2, 2**63]]}, "input"),
        ("/v1/embeddings", {"model": "echo", "input": [-1]}, "input"),
        (
            "/v1/messages",
            {
                **chat("echo"),
                "max_tokens": 16,
                "thinking": {"type": "enabled", "budget_tokens": 10**30},
            },
            "thinking.budget_tokens",
        ),
        (CHAT, chat("echo", logit_bias={"50256": 1e300}), "logit_bias"),
    ]
    for route, body, param in cases:
        r = httpx.post(gw.url + route, json=body, timeout=10)
        assert r.status_code == 400, (route, r.text)
        assert param in r.json()["error"]["message"], r.text


def test_sane_integers_still_pass(gw: GatewayProc) -> None:
    r = httpx.post(
        gw.url + CHAT,
        json=chat("echo", max_tokens=2**31 - 1, seed=-(2**63), n=1),
        headers={"authorization": f"Bearer {rid('sane')}"},  # a full bucket of its own
        timeout=10,
    )
    assert r.status_code == 200, r.text


# -- 6: nothing a client sends makes a new series ------------------------------------------


def series(gw: GatewayProc) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {(n, frozenset(labels.items())) for n, labels, _v in parse_metrics(gw.metrics())}


def flood(c: httpx.Client, round_: str, n: int) -> None:
    """``n`` requests of each kind, every one with values never sent before."""
    for i in range(n):
        tag = f"{round_}{i}"
        # invented methods, on a route and off
        c.request(f"X{tag.upper()}", CHAT)
        c.request(f"M{tag.upper()}", f"/nowhere/{tag}")
        # paths that match nothing, with every method a route serves
        c.get(f"/v1/{tag}")
        c.post(f"/v1/chat/{tag}", json={})
        # models: ad-hoc names (capped by the label guard) and unknown ones
        c.post(CHAT, json=chat(f"openai/adhoc-{tag}"))
        c.post(CHAT, json=chat(f"nosuchprovider/{tag}"))
        c.post("/v1/messages", json={**chat(f"{tag}-model"), "max_tokens": 5})
        # header values: cache TTLs, versions, ids, keys, content types
        c.post(
            CHAT,
            json=chat("echo"),
            headers={
                "x-request-id": tag,
                "x-gateway-cache-ttl": tag,
                "authorization": f"Bearer {tag}",
                "anthropic-version": tag,
                "user-agent": tag,
                "x-custom-" + tag: tag,
            },
        )
        c.post(CHAT, content=b"{}", headers={"content-type": f"text/{tag}"})


def test_client_values_never_create_series(gw: GatewayProc) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        # the label guard admits 100 ad-hoc model names, then everything is "other"
        for i in range(110):
            c.post(CHAT, json=chat(f"openai/warm-{i}"))
        flood(c, "w", 2)
        before = series(gw)
        flood(c, "f", 400)
        after = series(gw)
    assert after == before, sorted(after - before)[:20]
    methods = {dict(ls).get("method") for n, ls in after if n == "http_requests_total"}
    assert methods <= {"GET", "POST", "OTHER"}, methods
    routes = {dict(ls).get("route") for n, ls in after if n == "http_requests_total"}
    assert "unmatched" in routes and not any(r and "nowhere" in r for r in routes)


# -- absurd and huge headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [("x-big", "a" * 60_000)],
        [(f"x-h{i}", "v") for i in range(500)],
        [("content-length", "99999999999999999999999")],
        [("content-length", "-1")],
        [("x-request-id", "\u00ff" * 100)],
        [("authorization", "Bearer " + "k" * 100_000)],
        [("transfer-encoding", "chunked"), ("content-length", "5")],
    ],
    ids=[
        "one-60k",
        "500-headers",
        "huge-length",
        "negative-length",
        "latin1-id",
        "100k-key",
        "te-cl",
    ],
)
def test_absurd_headers(gw: GatewayProc, headers: list[tuple[str, str]]) -> None:
    body = json.dumps(chat("echo")).encode()
    names = {k for k, _ in headers}
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
    if "content-length" not in names and "transfer-encoding" not in names:
        head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    with connect(gw) as s:
        s.sendall(head.encode("latin-1") + body)
        s.settimeout(5)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (ConnectionError, TimeoutError):
            pass
    if got:
        status = int(got.split(b" ", 2)[1])
        assert status < 500, got[:300]
    assert re.search(rb"Traceback", got) is None
