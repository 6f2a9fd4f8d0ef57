"""Bounded fuzzing of request bodies (hypothesis) against one real gateway and its mock
provider: /v1/chat/completions, /v1/embeddings, /v1/messages, /v1/messages/count_tokens.

Bodies are drawn near the schema (every documented field, each sometimes with a value
of the wrong type, out of range or absurd, plus unknown fields) and far from it (any
JSON value, raw bytes). Whatever arrives, the answer is a 2xx or a 4xx with the
endpoint's error shape: OpenAI's ``{"error": {message, type, param, code}}``, or
Anthropic's ``{"type": "error", "error": {type, message}}`` on /v1/messages*. A 5xx,
another shape, or a 200 stream that ends with an error event fails. The examples
are derandomized (the same on every run) and bounded to run in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import GatewayFactory
from tests.harness import GatewayProc

pytestmark = pytest.mark.e2e

EXAMPLES = 2000
CONFIG = """\
models:
  - alias: fuzz
    deployments:
      - provider: mock
        model: mock-1
        mock: {latency_ms: 0, tokens_per_second: 0, reply_tokens: 3}
"""
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/embeddings")
ANTHROPIC_ROUTES = ("/v1/messages", "/v1/messages/count_tokens")


@pytest.fixture(scope="module")
def fuzz_gw(
    gateway_factory: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProc]:
    path = Path(tmp_path_factory.mktemp("fuzz")) / "gateway.yaml"
    path.write_text(CONFIG)
    with gateway_factory(
        {"GATEWAY_CONFIG": str(path), "LOG_LEVEL": "warning"}, name="gateway-fuzz"
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def fuzz_http(fuzz_gw: GatewayProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_gw.url, timeout=10) as c:
        yield c


# -- strategies -------------------------------------------------------------------------
# Bodies are built from values a client might well send; then, in about one object of
# seven, one field is replaced by any JSON value (or an absurd integer) or an unknown
# field is added. So most bodies get deep into the pipeline and many get a 400 naming
# the field, rather than nearly all failing validation at their first wrong field.

ABSURD_INTS = st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 10**30, -(2**63)])
small_ints = st.integers(min_value=1, max_value=64)
floats = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0, max_value=1)
short_text = st.text(max_size=12)
text = st.one_of(short_text, st.text(max_size=120), st.sampled_from(["", " ", "\x00", "\u2028"]))
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), floats, short_text, ABSURD_INTS)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=8,
)
UNKNOWN = st.sampled_from(["x_unknown", "extra_body", "metadata", "__proto__", "model"])


def _spoil(d: dict[str, Any], i: int, v: Any) -> dict[str, Any]:
    return {**d, sorted(d)[i % len(d)]: v} if d else d


def obj(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A JSON object with these fields (each optional one present or not): mostly as
    given, sometimes with one field spoiled or an unknown field added."""
    base = st.fixed_dictionaries(required, optional=optional)
    spoiled = st.builds(_spoil, base, st.integers(0, 99), json_value)
    extra = st.builds(lambda d, k, v: {**d, k: v}, base, UNKNOWN, json_value)
    return st.one_of(*[base] * 12, spoiled, extra)


def pick(*good: Any, bad: tuple[Any, ...] = ()) -> st.SearchStrategy[Any]:
    """One of the good values, now and then one of the bad ones."""
    return st.sampled_from(list(good) * 4 + list(bad))


models = pick("fuzz", "fuzz", "mock-1", bad=("nope", "openai/x", "", "m" * 300, "mock-"))
data_url = pick("data:image/png;base64,iVBORw0KGgo=", "https://example.com/a.png", bad=("x",))
content_part = obj(
    {"type": pick("text", "image_url", "input_audio", "file", "refusal", bad=("zzz",))},
    {
        "text": text,
        "image_url": obj({"url": data_url}, {"detail": pick("low", "high", "auto")}),
        "input_audio": obj({"data": short_text, "format": pick("wav", "mp3")}, {}),
        "file": obj({}, {"file_data": data_url, "filename": short_text, "file_id": short_text}),
        "refusal": text,
    },
)
tool_call = obj(
    {
        "id": short_text,
        "type": pick("function"),
        "function": obj({"name": short_text, "arguments": text}, {}),
    },
    {},
)
message = obj(
    {"role": pick("system", "developer", "user", "user", "assistant", "tool", bad=("robot",))},
    {
        "content": st.one_of(text, st.lists(content_part, max_size=3), st.none()),
        "name": short_text,
        "tool_calls": st.lists(tool_call, max_size=2),
        "tool_call_id": short_text,
    },
)
tool = obj(
    {"type": pick("function")},
    {
        "function": obj(
            {"name": st.text(min_size=1, max_size=20)},
            {"description": text, "parameters": json_value, "strict": st.booleans()},
        )
    },
)
chat_body = obj(
    {"model": models, "messages": st.lists(message, min_size=1, max_size=3)},
    {
        "stream": st.booleans(),
        "stream_options": obj({}, {"include_usage": st.booleans()}),
        "max_tokens": small_ints,
        "max_completion_tokens": small_ints,
        "temperature": st.floats(min_value=0, max_value=2),
        "top_p": unit,
        "n": st.integers(min_value=1, max_value=3),
        "stop": st.one_of(short_text, st.lists(short_text, max_size=4)),
        "presence_penalty": st.floats(min_value=-2, max_value=2),
        "frequency_penalty": st.floats(min_value=-2, max_value=2),
        "logit_bias": st.dictionaries(short_text, st.integers(-100, 100), max_size=3),
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 20),
        "seed": st.integers(),
        "tools": st.lists(tool, max_size=2),
        "tool_choice": st.one_of(pick("auto", "none", "required"), json_value),
        "parallel_tool_calls": st.booleans(),
        "response_format": obj(
            {"type": pick("text", "json_object", "json_schema")},
            {"json_schema": obj({"name": short_text}, {"schema": json_value})},
        ),
        "user": short_text,
    },
)
token_ids = st.integers(min_value=0, max_value=200_000)
embeddings_body = obj(
    {
        "model": models,
        "input": st.one_of(
            text,
            st.lists(text, min_size=1, max_size=3),
            st.lists(token_ids, min_size=1, max_size=4),
            st.lists(st.lists(token_ids, min_size=1, max_size=3), min_size=1, max_size=2),
        ),
    },
    {
        "encoding_format": pick("float", "base64", bad=("int8",)),
        "dimensions": st.integers(1, 64),
        "user": short_text,
    },
)
block = obj(
    {
        "type": pick(
            "text", "text", "image", "document", "tool_use", "tool_result", "thinking", bad=("z",)
        )
    },
    {
        "text": text,
        "source": obj(
            {"type": pick("base64", "url", "text")},
            {
                "media_type": pick("image/png", "application/pdf", "text/plain"),
                "data": short_text,
                "url": data_url,
            },
        ),
        "id": short_text,
        "name": short_text,
        "input": json_value,
        "tool_use_id": short_text,
        "content": st.one_of(text, st.lists(json_value, max_size=2)),
        "is_error": st.booleans(),
        "thinking": text,
        "signature": short_text,
    },
)
anthropic_message = obj(
    {
        "role": pick("user", "user", "assistant", bad=("system",)),
        "content": st.one_of(text, st.lists(block, min_size=1, max_size=3)),
    },
    {},
)
anthropic_common: dict[str, Any] = {
    "system": st.one_of(text, st.lists(block, max_size=2)),
    "tools": st.lists(
        obj(
            {"name": st.text(min_size=1, max_size=20)},
            {"description": text, "input_schema": json_value},
        ),
        max_size=2,
    ),
    "tool_choice": obj(
        {"type": pick("auto", "any", "tool", "none")},
        {"name": short_text, "disable_parallel_tool_use": st.booleans()},
    ),
    "thinking": obj({"type": pick("enabled", "disabled")}, {"budget_tokens": small_ints}),
}
messages_body = obj(
    {
        "model": models,
        "messages": st.lists(anthropic_message, min_size=1, max_size=3),
        "max_tokens": small_ints,
    },
    {
        **anthropic_common,
        "stop_sequences": st.lists(short_text, max_size=3),
        "stream": st.booleans(),
        "temperature": unit,
        "top_p": unit,
        "top_k": small_ints,
        "metadata": obj({}, {"user_id": short_text}),
    },
)
count_body = obj(
    {"model": models, "messages": st.lists(anthropic_message, min_size=1, max_size=3)},
    anthropic_common,
)
BODIES = {
    "/v1/chat/completions": chat_body,
    "/v1/embeddings": embeddings_body,
    "/v1/messages": messages_body,
    "/v1/messages/count_tokens": count_body,
}


def encoded(body: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Mostly the body as JSON; sometimes any JSON value, or bytes that are not JSON."""
    as_json = body.map(lambda b: json.dumps(b).encode())
    other = json_value.map(lambda v: json.dumps(v).encode())
    return st.one_of(*[as_json] * 8, other, st.binary(max_size=64))


cases = st.one_of([st.tuples(st.just(route), encoded(body)) for route, body in BODIES.items()])


# -- the check --------------------------------------------------------------------------


def check_error_shape(route: str, r: httpx.Response) -> None:
    body = r.json()
    if route in ANTHROPIC_ROUTES:
        assert body["type"] == "error", body
        err = body["error"]
        assert set(err) == {"type", "message"}, body
        assert isinstance(err["type"], str) and isinstance(err["message"], str), body
    else:
        assert set(body) == {"error"}, body
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}, body
        assert isinstance(err["message"], str) and err["message"], body
        assert isinstance(err["type"], str), body
        assert err["param"] is None or isinstance(err["param"], str), body


def check_stream(route: str, raw: str) -> None:
    if route == "/v1/chat/completions":
        assert raw.endswith("data: [DONE]\n\n"), raw[-300:]
        assert '"error"' not in raw.split("\n\n")[-3], raw[-300:]
    else:
        assert "event: error" not in raw and "event: message_stop" in raw, raw[-300:]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases)
def test_fuzzed_bodies_never_5xx(fuzz_http: httpx.Client, case: tuple[str, bytes]) -> None:
    route, content = case
    headers = {"content-type": "application/json"}
    with fuzz_http.stream("POST", route, content=content, headers=headers) as r:
        raw = r.read().decode("utf-8", "replace")
    assert r.status_code < 500, (route, content[:500], raw[:500])
    if r.status_code >= 400:
        check_error_shape(route, r)
    elif r.headers["content-type"].startswith("text/event-stream"):
        check_stream(route, raw)
    else:
        assert isinstance(json.loads(raw), dict), raw[:300]


def test_fuzz_left_no_trace(fuzz_gw: GatewayProc) -> None:
    """Runs after the fuzzing (same module): no traceback, no error logged."""
    out = fuzz_gw.proc.stdout() + fuzz_gw.proc.stderr()
    assert "Traceback" not in out
    assert not [x for x in fuzz_gw.json_logs() if x.get("level") in ("error", "critical")]
