"""A stream's close hooks all run, in order, even when one raises (logged, not lost):
the settle after a cache hook that failed on a strange upstream stream still happens."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.pipeline.relay import run_hooks


def test_a_hook_that_raises_does_not_skip_the_next(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def cache_store(relay: Any) -> None:
        ran.append("cache")
        raise TypeError("'<' not supported between instances of 'str' and 'int'")

    def settle(relay: Any) -> None:
        ran.append(f"settle {relay}")

    with caplog.at_level(logging.ERROR, logger="gateway.pipeline"):
        run_hooks([cache_store, settle], "the relay")
    assert ran == ["cache", "settle the relay"]
    failed = [r for r in caplog.records if r.getMessage() == "stream close hook failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert failed[0].fields == {
        "hook": "test_a_hook_that_raises_does_not_skip_the_next.<locals>.cache_store"
    }  # type: ignore[attr-defined]
