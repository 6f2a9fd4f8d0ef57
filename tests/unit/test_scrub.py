"""``gateway.scrub``: secrets masked in upstream text, in the two places it passes
(``UpstreamError`` and the JSON log formatter). End to end, over real sockets, in
``tests/e2e/test_upstream_credentials.py``."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from gateway.errors import UpstreamStatus, UpstreamUnavailable
from gateway.scrub import register, scrub
from gateway.telemetry.logging import JsonFormatter

# A key of no recognisable shape: only the registered list can catch it.
PLAIN_KEY = "plainkey0unit0test0e4d1"
register([PLAIN_KEY])

CASES = {
    "registered key, bare": (f"bad key {PLAIN_KEY} given", "bad key *** given"),
    "authorization header": (
        "headers: Authorization: Bearer abcdef0123456789; Host: x",
        "headers: Authorization: ***; Host: x",
    ),
    "bearer alone": ("token was Bearer abc.def-ghi_jkl", "token was Bearer ***"),
    "basic": ("Basic dXNlcjpwYXNzd29yZA== refused", "Basic *** refused"),
    "x-api-key header": ("x-api-key: abc123secret", "x-api-key: ***"),
    "api-key json": ('{"api-key": "0123abcd", "model": "m"}', '{"api-key": "***", "model": "m"}'),
    "python repr": ("{'X-Goog-Api-Key': 'zzz999'}", "{'X-Goog-Api-Key': '***'}"),
    "url credentials": (
        "proxy http://user:pa55@host:8080/v1 failed",
        "proxy http://***@host:8080/v1 failed",
    ),
    "query key": ("GET /v1beta/models?key=abc123&alt=sse", "GET /v1beta/models?key=***&alt=sse"),
    "openai key": ("use sk-proj-ABCDEFGH12345678 now", "use *** now"),
    "anthropic key": ("sk-ant-api03-abcdefghijklmnop-xyz", "***"),
    "google key": ("AIzaSyA1234567890abcdefghijklmnopqrstu bad", "*** bad"),
}


@pytest.mark.parametrize("text,want", CASES.values(), ids=list(CASES))
def test_scrub_masks_credentials_and_keeps_the_rest(text: str, want: str) -> None:
    assert scrub(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "The model `gpt-4o` does not exist",
        "The Bearer token is invalid; check your api_key",
        "Incorrect API key provided: sk-proj-****abcd. See https://platform.openai.com/keys.",
        "mail user@example.com about task-abcdefghijklmnopqrst",
        "",
    ],
)
def test_scrub_leaves_ordinary_text_alone(text: str) -> None:
    assert scrub(text) == text


def test_upstream_error_scrubs_every_text_field() -> None:
    err = UpstreamStatus(
        f"provider x failed: you sent Authorization: Bearer {PLAIN_KEY}",
        provider="x",
        upstream_status=400,
        status=400,
        param=PLAIN_KEY,
        code=f"code-{PLAIN_KEY}",
        type=f"type-{PLAIN_KEY}",
        headers={"retry-after": f"1 {PLAIN_KEY}"},
    )
    fields = [err.message, str(err), err.param, err.code, err.type, *err.headers.values()]
    assert all(PLAIN_KEY not in (f or "") for f in fields), fields
    assert err.message.startswith("provider x failed: you sent Authorization: ***")
    assert err.headers == {"retry-after": "1 ***"}


def test_upstream_unavailable_scrubs_too() -> None:
    err = UpstreamUnavailable(f"connect http://u:{PLAIN_KEY}@h/ failed", provider="p")
    assert err.message == "connect http://***@h/ failed"


def test_json_log_lines_are_scrubbed() -> None:
    try:
        raise RuntimeError(f"upstream said x-api-key: {PLAIN_KEY}")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "gateway.test", logging.ERROR, __file__, 1, "echo %s", (PLAIN_KEY,), exc_info
    )
    record.fields = {"error": f"Bearer {PLAIN_KEY}", "count": 3}
    line = JsonFormatter().format(record)
    assert PLAIN_KEY not in line
    out = json.loads(line)
    assert out["msg"] == "echo ***" and out["count"] == 3
    assert "x-api-key: ***" in out["traceback"]
