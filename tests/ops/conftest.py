"""Fixtures of the operations tests: the ops upstream (rotatable keys, gzip answers,
a record of each request's key, traceparent and accept-encoding)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Proc, clean_env, free_port, spawn, wait_until

OLD_KEY = "sk-ops-old-key-0000000000000000"
NEW_KEY = "sk-ops-new-key-1111111111111111"


@dataclass
class OpsUpstream:
    proc: Proc
    port: int

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(self.root + "/_requests", timeout=5).json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.root + "/_reset", timeout=5).raise_for_status()

    def accept_keys(self, *keys: str) -> None:
        httpx.post(self.root + "/_keys", json=list(keys), timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def ops_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsUpstream]:
    port = free_port()
    log_dir: Path = tmp_path_factory.mktemp("ops-upstream")
    argv = [sys.executable, "-m", "tests.fakes.ops_upstream", "--port", str(port)]
    proc = spawn(f"ops-upstream-{port}", [*argv, "--key", OLD_KEY], clean_env(), log_dir)
    up = OpsUpstream(proc, port)

    def ready() -> bool:
        return proc.alive() and httpx.get(up.root + "/_requests", timeout=1).status_code == 200

    if not wait_until(ready):
        proc.stop()
        raise RuntimeError("ops upstream did not start:\n" + proc.describe())
    try:
        yield up
    finally:
        proc.stop()
