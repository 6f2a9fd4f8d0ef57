"""One parametrized fixture per kernel: every test runs on both twins.

The compiled twin is skipped (not silently replaced) when
GATEWAY_NO_EXTENSIONS=1 forces the pure-Python build. ``SELECTED`` is the twin every
selector must have loaded in this run, ``variant(module)`` the twin a module is, and
``run_python`` runs code in a fresh interpreter (the flag is read at import).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass
from types import ModuleType

import pytest

from _speedups import NO_EXTENSIONS
from tests.harness import ROOT

# GATEWAY_NO_EXTENSIONS forces the pure twins; otherwise every kernel is built
# (``make install``), and a selector that fell back to "py" hides a broken build.
SELECTED = "py" if NO_EXTENSIONS else "c"
needs_c = pytest.mark.skipif(NO_EXTENSIONS, reason="GATEWAY_NO_EXTENSIONS=1")


def variant(module: ModuleType) -> str:
    """The twin a kernel module is, by its name: ``_speedups._sse_c`` is ``c``."""
    return module.__name__.rsplit("_", 1)[1]


def run_python(code: str, no_extensions: str | None) -> str:
    """The stdout of ``python -c code`` in a fresh interpreter, with
    ``GATEWAY_NO_EXTENSIONS`` set to ``no_extensions`` (``None``: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_NO_EXTENSIONS"}
    if no_extensions is not None:
        env["GATEWAY_NO_EXTENSIONS"] = no_extensions
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.strip()


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
            marks=[pytest.mark.c_extension, needs_c],
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
