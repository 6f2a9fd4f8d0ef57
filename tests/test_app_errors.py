"""The in-process app never answers malformed input with a 500: every failure is a 4xx
with the OpenAI error envelope, and an unexpected exception is a 500 envelope that
carries a request id and nothing else (no traceback, no secret).

Runs ``create_app(Settings.from_env({...}))`` under Litestar's TestClient, with the
built-in mock provider only (no key), so no sockets are involved.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.settings import Settings

URL = "/v1/chat/completions"
CAP = 64 * 1024
ENVELOPE_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def app_client() -> Iterator[TestClient[Any]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        app = create_app(Settings.from_env({"GATEWAY_MAX_BODY_BYTES": str(CAP)}))
        with TestClient(app, raise_server_exceptions=False) as c:
            c.gateway = app.gateway  # type: ignore[attr-defined]  # the test client wraps the edge
            yield c
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def assert_envelope(resp: Any, *statuses: int) -> dict[str, Any]:
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ENVELOPE_KEYS, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    assert "Traceback" not in resp.text
    return err  # type: ignore[no-any-return]


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}], **kw}


def test_valid_request_is_served(app_client: TestClient[Any]) -> None:
    resp = app_client.post(URL, json=chat())
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
    assert resp.headers["x-gateway-provider"] == "mock"


@pytest.mark.parametrize(
    "body,param",
    [
        (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (chat(temperature=3), "temperature"),
        (chat(temperature="hot"), "temperature"),
        (chat(top_p=-0.1), "top_p"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(n=0), "n"),
        (chat(stream="yes"), "stream"),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name"),
        (chat(response_format={"type": "yaml"}), "response_format.type"),
        (chat(messages=[]), "messages"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "mock-1"}, "messages"),
        (chat(model=""), "model"),
    ],
)
def test_schema_violations_name_the_param(
    app_client: TestClient[Any], body: dict[str, Any], param: str
) -> None:
    err = assert_envelope(app_client.post(URL, json=body), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


@pytest.mark.parametrize(
    "raw,code",
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"[]", "invalid_json"),
        (b"null", "invalid_json"),
        (b'"text"', "invalid_json"),
        (b'{"model": "mock-1"} trailing', "invalid_json"),
        (b'{"model": "mock-1", "messages": [{"role": "user", "content": "\xff"}]}', "invalid_json"),
        (
            b'{"model": "mock-1", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "invalid_json",
        ),
        (b"[" * 30_000 + b"]" * 30_000, "invalid_json"),
        (b"\xef\xbb\xbf{}", "invalid_json"),
    ],
    ids=[
        "empty",
        "truncated",
        "array",
        "null",
        "string",
        "trailing",
        "bad-utf8",
        "surrogate",
        "very-deep",
        "bom",
    ],
)
def test_malformed_bodies_are_400(app_client: TestClient[Any], raw: bytes, code: str) -> None:
    err = assert_envelope(app_client.post(URL, content=raw), 400)
    assert err["code"] == code


def test_depth_limit_boundary(app_client: TestClient[Any]) -> None:
    def nested(levels: int) -> dict[str, Any]:
        # the top object is level 1, "x" opens level 2, each further list one more
        value: Any = []
        for _ in range(levels - 2):
            value = [value]
        return chat(x=value)

    assert app_client.post(URL, json=nested(64)).status_code == 200
    err = assert_envelope(app_client.post(URL, json=nested(65)), 400)
    assert "64" in err["message"]


def test_body_over_cap_is_413(app_client: TestClient[Any]) -> None:
    body = chat(messages=[{"role": "user", "content": "x" * CAP}])
    err = assert_envelope(app_client.post(URL, json=body), 413)
    assert err["code"] == "request_too_large"


def test_unknown_model_is_404(app_client: TestClient[Any]) -> None:
    err = assert_envelope(app_client.post(URL, json=chat(model="no-such-model")), 404)
    assert (err["code"], err["param"]) == ("model_not_found", "model")
    err = assert_envelope(app_client.post(URL, json=chat(model="anthropic/claude-x")), 404)
    assert err["code"] == "model_not_found"  # provider not enabled


def test_unknown_path_and_wrong_method(app_client: TestClient[Any]) -> None:
    err = assert_envelope(app_client.get("/v1/nope"), 404)
    assert err["code"] == "not_found"
    resp = app_client.get(URL)
    err = assert_envelope(resp, 405)
    assert err["code"] == "method_not_allowed"
    assert "POST" in resp.headers["allow"]


def test_unexpected_exception_is_a_clean_500(
    app_client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = app_client.gateway  # type: ignore[attr-defined]

    def boom(model: str) -> Any:
        raise RuntimeError("secret sk-live-do-not-print and a prompt")

    monkeypatch.setattr(gw.registry, "resolve", boom)
    resp = app_client.post(URL, json=chat(), headers={"x-request-id": "rid-500-check"})
    err = assert_envelope(resp, 500)
    assert err["code"] == "internal_error"
    assert "rid-500-check" in err["message"]
    assert "sk-live" not in resp.text and "RuntimeError" not in resp.text
    assert resp.headers["x-request-id"] == "rid-500-check"


# -- property tests: arbitrary input never produces a 500 ---------------------------------

ALLOWED = (200, 400, 404, 413)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]) | st.text(
    max_size=8
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={
            "content": st.text(max_size=30) | json_values,
            "name": st.text(max_size=10) | json_values,
            "tool_calls": json_values,
        },
    )
    | json_values,
    max_size=3,
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["mock-1", "mock-fast", "nope", "openai/gpt-4o", ""])
        | st.text(max_size=12)
        | json_values,
        "messages": messages | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})
        | json_values,
        "temperature": st.floats(-5, 5) | json_values,
        "max_tokens": st.integers(-3, 40) | json_values,
        "n": st.integers(-1, 3),
        "stop": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "response_format": json_values,
        "logit_bias": json_values,
    },
)


def check_no_500(resp: Any) -> None:
    assert resp.status_code in ALLOWED, (resp.status_code, resp.text[:300])
    assert "Traceback" not in resp.text
    if resp.status_code >= 400:
        assert_envelope(resp, resp.status_code)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_random_bytes_never_500(app_client: TestClient[Any], raw: bytes) -> None:
    check_no_500(app_client.post(URL, content=raw))


@FUZZ
@given(value=json_values)
def test_random_json_values_never_500(app_client: TestClient[Any], value: Any) -> None:
    resp = app_client.post(URL, content=json.dumps(value).encode())
    check_no_500(resp)
    if not isinstance(value, dict):
        assert resp.status_code == 400


@FUZZ
@given(body=chat_like)
def test_chat_shaped_objects_never_500(app_client: TestClient[Any], body: dict[str, Any]) -> None:
    check_no_500(app_client.post(URL, content=json.dumps(body).encode()))


@FUZZ
@given(body=st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_embeddings_random_objects_never_500(
    app_client: TestClient[Any], body: dict[str, Any]
) -> None:
    check_no_500(app_client.post("/v1/embeddings", content=json.dumps(body).encode()))
