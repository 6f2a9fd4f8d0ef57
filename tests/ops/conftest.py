"""Fixtures of the operations tests: the ops upstream (rotatable keys, gzip answers,
a record of each request's key, traceparent and accept-encoding)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import Fake, start_fake

OLD_KEY = "sk-ops-old-key-0000000000000000"
NEW_KEY = "sk-ops-new-key-1111111111111111"


@dataclass
class OpsUpstream(Fake):
    """``tests/fakes/ops_upstream.py``."""

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def accept_keys(self, *keys: str) -> None:
        httpx.post(self.root + "/_keys", json=list(keys), timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def ops_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsUpstream]:
    log_dir: Path = tmp_path_factory.mktemp("ops-upstream")
    fake = start_fake("ops_upstream", log_dir, OLD_KEY, kind=OpsUpstream)
    assert isinstance(fake, OpsUpstream)
    try:
        yield fake
    finally:
        fake.stop()
