"""The shipped redact plugin (``gateway.plugins.redact``), in-process: every built-in
pattern (matches and near misses), every place prompt text lives on every endpoint,
the options that stop start-up, and hypothesis properties. Over real sockets in
``tests/plugins/test_redact_e2e.py``."""

from __future__ import annotations

import json
import typing
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.chat import CHAT
from gateway.api.embeddings import EMBEDDINGS
from gateway.api.messages import COUNT_TOKENS, MESSAGES
from gateway.config import ConfigError, parse_config
from gateway.pipeline.context import RequestContext
from gateway.pipeline.endpoint import Endpoint
from gateway.plugins.base import Reject
from gateway.plugins.patterns import BUILTINS, Redactor
from gateway.plugins.redact import WALKERS, BuiltinName, Redact, RedactOptions, build
from gateway.telemetry import metrics

ALL = list(BUILTINS)
EVERY_FIELD = frozenset(["system", "user", "assistant", "tool", "input"])
ENDPOINTS = {"chat": CHAT, "embeddings": EMBEDDINGS, "messages": MESSAGES, "count": COUNT_TOKENS}


def redactor(**options: Any) -> Redactor:
    return build(msgspec.convert({"builtin": ALL, **options}, RedactOptions))


EVERYTHING = redactor()


def redact(text: str, r: Redactor = EVERYTHING) -> str:
    out = r.redact(text, [0] * len(r.names))
    assert out is not None
    return out


# -- every built-in pattern -------------------------------------------------------------

# (text, what it becomes) with every pattern on.
MATCHES = {
    "email": [
        ("mail john.doe+tag@example.co.uk now", "mail [REDACTED:email] now"),
        ("x@y.io", "[REDACTED:email]"),
        ("<ops_team@mail.example.com>", "<[REDACTED:email]>"),
    ],
    "phone": [
        ("call (415) 555-2671 today", "call [REDACTED:phone] today"),
        ("415.555.2671", "[REDACTED:phone]"),
        ("1-800-555-0199", "[REDACTED:phone]"),
        ("+44 20 7946 0958", "[REDACTED:phone]"),
        ("tel:+4915123456789", "tel:[REDACTED:phone]"),
    ],
    "credit_card": [
        ("card 4111 1111 1111 1111 exp", "card [REDACTED:credit_card] exp"),
        ("4111-1111-1111-1111", "[REDACTED:credit_card]"),
        ("5500005555555559", "[REDACTED:credit_card]"),
        ("amex 3782 822463 10005.", "amex [REDACTED:credit_card]."),
        ("4111 1111 1111 1111 123", "[REDACTED:credit_card] 123"),  # the CVV stays
        ("order-4111111111111111", "order-[REDACTED:credit_card]"),
    ],
    "us_ssn": [
        ("SSN 123-45-6789.", "SSN [REDACTED:us_ssn]."),
        ("123 45 6789", "[REDACTED:us_ssn]"),
    ],
    "ipv4": [
        ("host 10.0.0.1.", "host [REDACTED:ipv4]."),
        ("192.168.255.254:8080", "[REDACTED:ipv4]:8080"),
    ],
    "iban": [
        ("IBAN DE89 3704 0044 0532 0130 00 THANKS", "IBAN [REDACTED:iban] THANKS"),
        ("GB82WEST12345698765432", "[REDACTED:iban]"),
    ],
    "api_key": [
        ("key sk-proj-abcdefghijklmnop1234567890", "key [REDACTED:api_key]"),
        ("sk-ant-api03-AbCdEfGhIjKlMnOp_QrSt-123", "[REDACTED:api_key]"),
        ("ghp_" + "a1" * 18, "[REDACTED:api_key]"),
        ("xoxb-123456789012-abcdef", "[REDACTED:api_key]"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "[REDACTED:api_key]"),
    ],
    "aws_access_key": [("id=AKIAIOSFODNN7EXAMPLE;", "id=[REDACTED:aws_access_key];")],
    "bearer_token": [
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc123",
            "Authorization: [REDACTED:bearer_token]",
        ),
        ("bearer abcdefghijklmnop1234==", "[REDACTED:bearer_token]"),
    ],
}

# Texts that look close to a pattern and must stay as they are.
NEAR_MISSES = [
    "mail me @ noon",  # no local part
    "user@localhost",  # no dot in the domain
    "4111 1111 1111 1112",  # fails the Luhn check
    "0000 0000 0000 0000",  # passes Luhn, one repeated digit
    "12345678901234567890123",  # too many digits for a card
    "000-12-3456 666-12-3456 912-12-3456",  # SSN areas never issued
    "123-00-4567 123-45-0000",  # SSN group or serial of zeros
    "256.1.1.1 1.2.3 01.2.3.4 1.2.3.4.5",  # not IPv4 addresses
    "GB82 WEST 1234 5698 7654 33",  # IBAN with a bad checksum
    "ZZ89370400440532013000",  # no such IBAN country
    "sk-learn-is-a-great-library-for-ml",  # key-shaped, no digit
    "Bearer authentication-is-great-stuff",  # no digit in the token
    "AKIA12345",  # too short
    "version 2024-01-01 and 1.2.3",
    "call 555-0100",  # seven digits: not a phone number here
    "risk-assessment-2024-framework-doc",
]


@pytest.mark.parametrize(
    ("name", "text", "want"),
    [(name, text, want) for name, cases in MATCHES.items() for text, want in cases],
)
def test_builtin_pattern_matches(name: str, text: str, want: str) -> None:
    assert redact(text) == want
    only = redactor(builtin=[name])  # and that pattern alone finds it
    assert redact(text, only) == want


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_stay(text: str) -> None:
    assert EVERYTHING.find(text) is None
    assert redact(text) == text


def test_every_builtin_is_an_option_and_tested() -> None:
    assert set(typing.get_args(BuiltinName)) == set(BUILTINS) == set(MATCHES)


def test_counts_per_pattern_and_replacement_template() -> None:
    r = redactor(builtin=["email", "us_ssn"], replacement="<{name}>")
    counts = [0, 0]
    out = r.redact("a@b.co, c@d.co and 123-45-6789", counts)
    assert out == "<email>, <email> and <us_ssn>"
    assert dict(zip(r.names, counts, strict=True)) == {"email": 2, "us_ssn": 1}


def test_custom_patterns_with_flags_and_groups() -> None:
    r = redactor(
        builtin=[],
        patterns={"falcon": r"(?i)\bproject\s+(falcon|eagle)\b", "ticket": r"JIRA-\d+"},
    )
    assert redact("Re: PROJECT Falcon, see JIRA-42", r) == (
        "Re: [REDACTED:falcon], see [REDACTED:ticket]"
    )
    # custom patterns come after the built-in ones at one position
    both = redactor(builtin=["email"], patterns={"domain": r"@example\.com"})
    assert redact("x@example.com", both) == "[REDACTED:email]"


def test_a_refused_match_lets_a_later_pattern_match_there() -> None:
    # 16 digits failing Luhn are not a card, but the custom pattern still sees them.
    r = redactor(builtin=["credit_card"], patterns={"account": r"\d{16}"})
    assert redact("acct 4111111111111112", r) == "acct [REDACTED:account]"


# -- options ------------------------------------------------------------------------------


def plugin_config(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "plugins": [
            {"use": "gateway.plugins.redact:Redact", "at": "before_cache", "options": options}
        ]
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"action": "mask"}, "options: Invalid enum value 'mask' - at `$.action`"),
        ({"builtin": ["emails"]}, "options: Invalid enum value 'emails' - at `$.builtin[0]`"),
        ({"patterns": {"bad": "a(b"}}, "patterns.bad: invalid regex (missing ), unterminated"),
        ({"patterns": {"empty": "x*"}}, "patterns.empty: matches the empty string"),
        ({"patterns": {"ref": r"(a)\1"}}, "patterns.ref: backreferences are not supported"),
        ({"patterns": {"named": r"(?P<x>a)"}}, "patterns.named: named groups are not supported"),
        ({"patterns": {"email": "x"}}, "patterns.email: the name of a built-in pattern"),
        ({"patterns": {"has space": "x"}}, "options: Expected `str` matching regex"),
        ({"builtin": [], "patterns": {}}, "no patterns"),
        (
            {"replacement": "[{name}]", "patterns": {"br": r"\[\w+\]"}},
            "(for api_key) matches the pattern br",
        ),
        ({"endpoints": ["responses"]}, "Invalid enum value 'responses' - at `$.endpoints[0]`"),
        ({"fields": ["tools"]}, "options: Invalid enum value 'tools' - at `$.fields[0]`"),
        ({"colour": "red"}, "options: Object contains unknown field `colour`"),
    ],
)
def test_bad_options_stop_start_up_with_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(plugin_config(options))
    text = str(info.value)
    assert text.startswith("plugins[0].use: gateway.plugins.redact:Redact: "), text
    assert message in text, text
    assert "\n" not in text


def test_default_options_load() -> None:
    cfg = parse_config(plugin_config({}))
    assert cfg.plugins[0].options == {}
    plugin = Redact(RedactOptions())
    defaults = "api_key aws_access_key bearer_token email us_ssn credit_card"  # documented
    assert plugin.redactor.names == defaults.split()


# -- where prompt text lives ----------------------------------------------------------------

SECRET = "reach me at jane@example.com"
CLEAN = "reach me at [REDACTED:email]"


def context(endpoint: Endpoint, body: dict[str, Any]) -> RequestContext:
    ctx = RequestContext("rid", 0.0, "POST", endpoint.path)
    ctx.endpoint = endpoint
    ctx.body = body
    return ctx


def run(plugin: Redact, endpoint: Endpoint, body: dict[str, Any]) -> RequestContext:
    ctx = context(endpoint, body)
    plugin(ctx)
    return ctx


def chat_body() -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": SECRET},
            {"role": "developer", "content": [{"type": "text", "text": SECRET}]},
            {"role": "user", "content": SECRET, "name": "jane@example.com"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": SECRET},
                    {"type": "image_url", "image_url": {"url": "https://x/jane@example.com"}},
                ],
            },
            {
                "role": "assistant",
                "content": SECRET,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"to": "jane@example.com"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": SECRET},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": SECRET}]},
        ],
        "user": "jane@example.com",
    }


def chat_texts(body: dict[str, Any]) -> dict[str, Any]:
    m = body["messages"]
    return {
        "system": [m[0]["content"], m[1]["content"][0]["text"]],
        "user": [m[2]["content"], m[3]["content"][0]["text"]],
        "assistant": [m[4]["content"]],
        "tool": [m[5]["content"], m[6]["content"][0]["text"]],
        "untouched": [
            m[2]["name"],
            m[3]["content"][1]["image_url"]["url"],
            m[4]["tool_calls"][0]["function"]["arguments"],
            body["user"],
        ],
    }


def anthropic_body() -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 10,
        "system": [{"type": "text", "text": SECRET}],
        "metadata": {"user_id": "jane@example.com"},
        "messages": [
            {"role": "user", "content": SECRET},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": SECRET, "signature": "sig"},
                    {"type": "text", "text": SECRET},
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "f",
                        "input": {"to": "jane@example.com"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": SECRET},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "content": [{"type": "text", "text": SECRET}],
                    },
                    {"type": "text", "text": SECRET},
                ],
            },
        ],
    }


def anthropic_texts(body: dict[str, Any]) -> dict[str, Any]:
    m = body["messages"]
    return {
        "system": [body["system"][0]["text"]],
        "user": [m[0]["content"], m[2]["content"][2]["text"]],
        "assistant": [m[1]["content"][1]["text"]],
        "tool": [m[2]["content"][0]["content"], m[2]["content"][1]["content"][0]["text"]],
        "untouched": [
            body["metadata"]["user_id"],
            m[1]["content"][0]["thinking"],
            m[1]["content"][2]["input"]["to"],
        ],
    }


FIELDS = ["system", "user", "assistant", "tool"]


@pytest.mark.parametrize("fields", [FIELDS, ["system"], ["user"], ["assistant"], ["tool"]])
@pytest.mark.parametrize(
    ("endpoint", "make", "texts"),
    [
        (CHAT, chat_body, chat_texts),
        (MESSAGES, anthropic_body, anthropic_texts),
        (COUNT_TOKENS, anthropic_body, anthropic_texts),
    ],
    ids=["chat", "messages", "count_tokens"],
)
def test_every_field_of_the_conversation(
    endpoint: Endpoint, make: Any, texts: Any, fields: list[str]
) -> None:
    plugin = Redact(RedactOptions(builtin=("email",), fields=tuple(fields)))  # type: ignore[arg-type]
    ctx = run(plugin, endpoint, make())
    found = texts(ctx.body)
    for field in FIELDS:
        want = CLEAN if field in fields else SECRET
        assert found[field] == [want] * len(found[field]), field
    assert all("jane@example.com" in t for t in found["untouched"])
    redacted = sum(len(found[f]) for f in fields)
    assert ctx.headers["x-gateway-redactions"] == str(redacted)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (SECRET, CLEAN),
        ([SECRET, "plain", SECRET], [CLEAN, "plain", CLEAN]),
        ([[1, 2, 3], [4]], [[1, 2, 3], [4]]),  # token arrays: nothing to read
    ],
)
def test_embeddings_input(value: Any, want: Any) -> None:
    plugin = Redact(RedactOptions(builtin=("email",)))
    ctx = run(plugin, EMBEDDINGS, {"model": "m", "input": value, "user": "jane@example.com"})
    assert ctx.body["input"] == want
    assert ctx.body["user"] == "jane@example.com"
    off = Redact(RedactOptions(builtin=("email",), fields=("user",)))
    assert run(off, EMBEDDINGS, {"model": "m", "input": SECRET}).body["input"] == SECRET


def test_only_the_configured_endpoints() -> None:
    plugin = Redact(RedactOptions(builtin=("email",), endpoints=("embeddings",)))
    ctx = run(plugin, CHAT, chat_body())
    assert chat_texts(ctx.body)["user"] == [SECRET, SECRET]
    assert "x-gateway-redactions" not in ctx.headers
    assert run(plugin, EMBEDDINGS, {"input": SECRET}).body["input"] == CLEAN


def test_an_endpoint_it_does_not_know_gets_every_shape() -> None:
    class Responses(Endpoint):
        name = "responses"
        path = "/v1/responses"

    body = {"system": SECRET, "messages": [{"role": "user", "content": SECRET}], "input": SECRET}
    ctx = run(Redact(RedactOptions(builtin=("email",))), Responses(), body)
    assert ctx.body == {
        "system": CLEAN,
        "messages": [{"role": "user", "content": CLEAN}],
        "input": CLEAN,
    }


def test_header_can_be_renamed_or_dropped() -> None:
    ctx = run(Redact(RedactOptions(header="x-pii")), CHAT, {"messages": []})
    assert ctx.headers == {"x-pii": "0"}
    assert run(Redact(RedactOptions(header=None)), CHAT, {"messages": []}).headers == {}


# -- block --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "where"),
    [
        (
            CHAT,
            {"messages": [{"role": "user", "content": ["x"]}, {"role": "tool", "content": SECRET}]},
            "messages[1].content",
        ),
        (
            MESSAGES,
            {"system": [{"type": "text", "text": SECRET}], "messages": []},
            "system[0].text",
        ),
        (EMBEDDINGS, {"input": ["fine", SECRET]}, "input[1]"),
    ],
    ids=["chat", "messages", "embeddings"],
)
def test_block_names_the_pattern_and_place_never_the_text(
    endpoint: Endpoint, body: dict[str, Any], where: str
) -> None:
    plugin = Redact(RedactOptions(action="block"))
    before = json.dumps(body)
    with pytest.raises(Reject) as info:
        run(plugin, endpoint, body)
    err = info.value
    assert err.status == 400
    assert err.code == "content_blocked"
    assert err.param == where
    assert "'email'" in err.message and where in err.message
    assert "jane" not in err.message and "example.com" not in err.message
    assert json.dumps(body) == before  # block never rewrites


def test_block_passes_clean_requests() -> None:
    plugin = Redact(RedactOptions(action="block"))
    ctx = run(plugin, CHAT, {"messages": [{"role": "user", "content": "hello"}]})
    assert ctx.headers == {}


def sample(action: str, pattern: str) -> float:
    value = metrics.gateway_redactions_total.labels(action, pattern)._value.get()
    return float(value)


def test_metrics_count_by_action_and_configured_name() -> None:
    redact_plugin = Redact(RedactOptions(builtin=("us_ssn",), patterns={"codename": "FALCON"}))
    block_plugin = Redact(RedactOptions(action="block", builtin=("us_ssn",)))
    before = (sample("redact", "us_ssn"), sample("redact", "codename"), sample("block", "us_ssn"))
    run(
        redact_plugin,
        CHAT,
        {"messages": [{"role": "user", "content": "123-45-6789 FALCON 123-45-6789"}]},
    )
    with pytest.raises(Reject):
        run(block_plugin, CHAT, {"messages": [{"role": "user", "content": "123-45-6789"}]})
    after = (sample("redact", "us_ssn"), sample("redact", "codename"), sample("block", "us_ssn"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]


# -- properties ---------------------------------------------------------------------------

# Text rich in what the patterns look for, so the properties meet real matches.
FRAGMENTS = st.sampled_from(
    [
        "4111 1111 1111 1111", "4111111111111111", "123-45-6789", "10.0.0.1", "a@b.co",
        "+44 20 7946 0958", "(415) 555-2671", "DE89 3704 0044 0532 0130 00", "AKIAIOSFODNN7EXAMPLE",
        "sk-proj-abcdefghij0123456789", "Bearer abcdefghij0123456789", "@", ".", "-", " ", "1",
        "9", "0", "A", "Z", "s", "k", "x",
    ]
)  # fmt: skip
RICH_TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=4)), max_size=24).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RICH_TEXT)
def test_redacted_text_never_contains_a_match(text: str) -> None:
    counts = [0] * len(EVERYTHING.names)
    out = EVERYTHING.redact(text, counts)
    assert out is not None
    assert EVERYTHING.find(out) is None
    if not sum(counts):
        assert out == text
    assert redact(out) == out


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | RICH_TEXT,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["role", "content", "type", "text", "system", "input", "messages", "x"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "x", 3])
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "tool_result", "image"])},
    optional={"text": JSON, "content": JSON},
)
MESSAGE = st.fixed_dictionaries(
    {}, optional={"role": ROLES, "content": st.one_of(JSON, st.lists(PART | JSON, max_size=3))}
)
BODY = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.one_of(JSON, st.lists(MESSAGE | JSON, max_size=4)),
        "system": st.one_of(JSON, st.lists(PART, max_size=3)),
        "input": JSON,
        "model": JSON,
    },
)
PLUGINS = {
    "redact": Redact(RedactOptions(builtin=tuple(ALL))),  # type: ignore[arg-type]
    "block": Redact(RedactOptions(action="block", builtin=tuple(ALL))),  # type: ignore[arg-type]
}


def leaves(value: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], str]:
    """Every string in a JSON value, by its path."""
    if isinstance(value, str):
        return {path: value}
    items = (
        enumerate(value)
        if isinstance(value, list)
        else value.items()
        if isinstance(value, dict)
        else ()
    )
    out: dict[tuple[Any, ...], str] = {}
    for k, v in items:
        out.update(leaves(v, (*path, k)))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=BODY,
    endpoint=st.sampled_from(sorted(ENDPOINTS)),
    action=st.sampled_from(["redact", "block"]),
)
def test_never_raises_on_arbitrary_bodies(body: dict[str, Any], endpoint: str, action: str) -> None:
    plugin = PLUGINS[action]
    before = leaves(body)
    ctx = context(ENDPOINTS[endpoint], body)
    try:
        plugin(ctx)
    except Reject as err:  # only block refuses, and only for a match
        assert action == "block"
        assert err.code == "content_blocked"
        assert leaves(ctx.body) == before
        return
    after = leaves(ctx.body)
    if action == "block":
        assert after == before
        return
    # The same places hold text; the ones the plugin reads match nothing any more,
    # the others are unchanged.
    assert after.keys() == before.keys()
    read = {path for _, _, path in WALKERS[ENDPOINTS[endpoint].name](ctx.body, EVERY_FIELD)}
    for path, text in after.items():
        if path in read:
            assert EVERYTHING.find(text) is None, (path, text)
        else:
            assert text == before[path], path
    assert int(ctx.headers["x-gateway-redactions"]) >= 0
