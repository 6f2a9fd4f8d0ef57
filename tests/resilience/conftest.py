"""The fault-injecting upstream (one process for the session, reset before each test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.resilience.helpers import Fault, start_fault_upstream


@pytest.fixture(scope="session")
def fault_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fault]:
    with start_fault_upstream(Path(tmp_path_factory.mktemp("resilience")) / "logs") as fault:
        yield fault


@pytest.fixture
def fault(fault_upstream: Fault) -> Fault:
    fault_upstream.reset()
    return fault_upstream
