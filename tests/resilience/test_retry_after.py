"""The waits a rate-limited upstream asks for: header parsers, which reset applies, the cap,
and what each provider's 429 gives the client (offline: adapters do no I/O)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline import retry_after as ra
from gateway.pipeline.retry_after import MAX_WAIT, go_duration, reset_wait, rfc3339_wait, wait_from
from tests.providers import golden as g

NOW = 1_700_000_000.0  # a fixed wall-clock time for RFC 3339 resets


def at(seconds: float) -> str:
    return (datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1.4s", 1.4),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("20ms", 0.02),
        ("0s", 0.0),
        ("0", 0.0),
        ("1h2m3.5s", 3723.5),
        ("2m59.56s", 179.56),
        ("1s", 1.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("+2s", 2.0),
        ("1m30s500ms", 90.5),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),
        ("7ns", 7e-9),
        (" 3s ", 3.0),
        ("12", 12.0),  # plain seconds, as Azure sends them
        ("0.5", 0.5),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    got = go_duration(text)
    assert got is not None and math.isclose(got, seconds, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize(
    "text",
    ["", "s", ".s", "-1s", "-1", "-0.5", "1x", "1 s", "1h-2m", "abc", "1.2.3s", "nan", "inf",
     "1e3s", "0x10s", "1s2", "\u0661s", "9" * 80 + "s", "1h\x002s", "1S"],
)  # fmt: skip
def test_go_duration_garbage_is_none(text: str) -> None:
    assert go_duration(text) is None


def test_huge_durations_parse_but_never_wait_past_the_cap() -> None:
    assert go_duration("99999999999999999999h") == pytest.approx(3.6e23)
    h = {"x-ratelimit-reset-requests": "99999999999999999999h"}
    assert reset_wait(h) == MAX_WAIT and wait_from(h) == MAX_WAIT
    assert wait_from({"retry-after": "99999999999"}) == MAX_WAIT
    assert wait_from({"retry-after-ms": "1e300"}) == MAX_WAIT
    assert wait_from({"retry-after-ms": "1e400"}) is None  # infinite: ignored


def test_rfc3339_waits() -> None:
    assert rfc3339_wait(at(30), NOW) == pytest.approx(30)
    assert rfc3339_wait(at(-5), NOW) == 0.0  # passed already
    assert rfc3339_wait("2023-11-14T22:13:50Z", NOW) == pytest.approx(30)
    assert rfc3339_wait("2023-11-14t22:13:50.500z", NOW) == pytest.approx(30.5)
    assert rfc3339_wait("2023-11-14T23:13:50+01:00", NOW) == pytest.approx(30)
    for bad in ("", "tomorrow", "2023-11-14", "2023-11-14T22:13:50", "2023-13-40T99:99:99Z",
                "30", "-1", "9" * 100):  # fmt: skip
        assert rfc3339_wait(bad, NOW) is None, bad


def test_the_longest_exhausted_reset_applies() -> None:
    # requests spent (20 s), tokens left (6 min): the requests reset
    h = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-remaining-tokens": "39000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert reset_wait(h) == 20.0
    # both spent: the longer
    assert reset_wait({**h, "x-ratelimit-remaining-tokens": "0"}) == 360.0
    # cannot tell which: the longer of the two
    assert reset_wait({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "3s"}) == 3
    # Anthropic: input tokens spent (45 s), requests left (2 s)
    a = {
        "anthropic-ratelimit-requests-remaining": "10",
        "anthropic-ratelimit-requests-reset": at(2),
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": at(45),
        "anthropic-ratelimit-output-tokens-remaining": "8000",
        "anthropic-ratelimit-output-tokens-reset": at(50),
    }
    assert reset_wait(a, NOW) == pytest.approx(45)
    # a malformed reset is skipped, the rest still count
    assert reset_wait({**h, "x-ratelimit-reset-requests": "soon"}) == 360.0
    assert reset_wait({"x-ratelimit-reset-requests": "-1"}) is None


def test_explicit_hints_come_first() -> None:
    resets = {"x-ratelimit-reset-requests": "20s", "x-ratelimit-remaining-requests": "0"}
    assert wait_from({**resets, "retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert wait_from({**resets, "retry-after": "9"}) == 9.0
    assert wait_from({**resets, "retry-after": "-3"}) == 20.0  # malformed: the next source
    assert wait_from({**resets, "retry-after-ms": "soon"}) == 20.0
    assert wait_from({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, NOW) == pytest.approx(30)
    assert wait_from({}) is None


def test_client_hints_round_up_to_whole_seconds() -> None:
    assert ra.client_hints({"x-ratelimit-reset-requests": "120ms"}) == {
        "retry-after": "1",
        "retry-after-ms": "120",
    }
    assert ra.client_hints({"retry-after-ms": "2500", "x-should-retry": "TRUE"}) == {
        "retry-after": "3",
        "retry-after-ms": "2500",
        "x-should-retry": "true",
    }
    assert ra.client_hints({"x-should-retry": "maybe\r\nx: y"}) == {}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "retry-after",
                "retry-after-ms",
                "x-ratelimit-reset-requests",
                "x-ratelimit-reset-tokens",
                "x-ratelimit-remaining-requests",
                "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-tokens-remaining",
            ]
        ),
        st.one_of(
            st.text(max_size=40),
            st.from_regex(r"-?[0-9]{0,25}(\.[0-9]{0,5})?(ns|us|ms|s|m|h){0,3}", fullmatch=True),
            st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,15}(Z|[+-][0-9:]{0,6})?"),
        ),
    )
)
def test_any_header_values_never_raise_nor_pass_the_cap(headers: dict[str, str]) -> None:
    wait = wait_from(headers)
    assert wait is None or 0 <= wait <= MAX_WAIT
    hints = ra.client_hints(headers)
    assert set(hints) <= {"retry-after", "retry-after-ms", "x-should-retry"}
    if "retry-after" in hints:
        assert 0 <= int(hints["retry-after"]) <= MAX_WAIT


# -- each provider's 429 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("openai", b'{"error": {"message": "Rate limit reached", "type": "requests"}}'),
        ("azure", b'{"error": {"code": "429", "message": "Rate limit is exceeded."}}'),
    ],
)
def test_openai_reset_headers_become_retry_after(provider: str, body: bytes) -> None:
    base = (
        "https://example.openai.azure.com" if provider == "azure" else "https://api.openai.com/v1"
    )
    dep = g.make_dep(provider, "gpt-4o", base)
    headers = httpx.Headers(
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-reset-tokens": "1h2m3.5s",
        }
    )
    err = dep.adapter.map_error(dep, 429, headers, body)
    assert err.status == 429
    assert err.headers == {"retry-after": "360", "retry-after-ms": "360000"}


def test_anthropic_reset_headers_become_retry_after() -> None:
    dep = g.make_dep("anthropic", "claude-x", "https://api.anthropic.com")
    soon = (datetime.now(UTC) + timedelta(seconds=40)).isoformat().replace("+00:00", "Z")
    headers = httpx.Headers(
        {
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": soon,
        }
    )
    body = b'{"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}'
    err = dep.adapter.map_error(dep, 429, headers, body)
    assert err.status == 429 and 38 <= int(err.headers["retry-after"]) <= 40
    assert 38_000 <= int(err.headers["retry-after-ms"]) <= 40_000


def test_gemini_retry_info_still_maps() -> None:
    dep = g.make_dep("gemini", "gemini-2.0-flash", "https://generativelanguage.googleapis.com/v1")
    body = (
        b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details":'
        b' [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7.2s"}]}}'
    )
    err = dep.adapter.map_error(dep, 429, httpx.Headers({}), body)
    assert err.headers == {"retry-after": "8", "retry-after-ms": "8000"}


def test_a_429_without_any_hint_has_none() -> None:
    dep = g.make_dep("openai", "gpt-4o", "https://api.openai.com/v1")
    err = dep.adapter.map_error(dep, 429, httpx.Headers({"x-ratelimit-reset-requests": "x"}), b"")
    assert err.status == 429 and "retry-after" not in err.headers
