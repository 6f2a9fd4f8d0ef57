"""One parametrized fixture per kernel: every test runs on both twins.

The compiled twin is skipped (not silently replaced) when
GATEWAY_NO_EXTENSIONS=1 forces the pure-Python build.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import pytest

from _speedups import NO_EXTENSIONS


@dataclass(frozen=True)
class Twin:
    kernel: str
    variant: str  # "py" | "c"

    def __str__(self) -> str:
        return self.variant

    def load(self) -> ModuleType:
        return importlib.import_module(f"_speedups._{self.kernel}_{self.variant}")


def _params(kernel: str) -> list[object]:
    return [
        pytest.param(Twin(kernel, "py"), id="py"),
        pytest.param(
            Twin(kernel, "c"),
            id="c",
            marks=[
                pytest.mark.c_extension,
                pytest.mark.skipif(NO_EXTENSIONS, reason="GATEWAY_NO_EXTENSIONS=1"),
            ],
        ),
    ]


def _impl(request: pytest.FixtureRequest) -> ModuleType:
    twin: Twin = request.param
    return twin.load()


@pytest.fixture(scope="session", params=_params("sse"))
def sse_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _impl(request)


@pytest.fixture(scope="session", params=_params("tokens"))
def tokens_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _impl(request)


@pytest.fixture(scope="session", params=_params("cachekey"))
def cachekey_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _impl(request)


@pytest.fixture(scope="session", params=_params("bucket"))
def bucket_impl(request: pytest.FixtureRequest) -> ModuleType:
    return _impl(request)
