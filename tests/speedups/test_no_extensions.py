"""``GATEWAY_NO_EXTENSIONS``: only ``1``, ``true`` or ``yes`` force the pure twins, at run
time (``_speedups/__init__.py``) and at build time (``setup.py``); ``0`` used to force
them too (issue 9, item 17). Each case runs in a fresh interpreter, since the flag is
read at import."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.harness import ROOT

FORCING = ["1", "true", "TRUE", "yes", " Yes "]
NOT_FORCING = ["", "0", "false", "no", "off"]
_built = importlib.util.find_spec("_speedups._sse_c") is not None


def _python(code: str, value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_NO_EXTENSIONS"}
    if value is not None:
        env["GATEWAY_NO_EXTENSIONS"] = value
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return p.stdout.strip()


_LOADED = "import _speedups; print(sorted(set(_speedups.implementations().values())))"


@pytest.mark.parametrize("value", FORCING)
def test_true_values_force_the_pure_twins(value: str) -> None:
    assert _python(_LOADED, value) == "['py']"


@pytest.mark.skipif(not _built, reason="the compiled twins are not built")
@pytest.mark.parametrize("value", [None, *NOT_FORCING])
def test_other_values_keep_the_compiled_twins(value: str | None) -> None:
    assert _python(_LOADED, value) == "['c']"


# setup.py with setuptools.setup and Cython's cythonize replaced (Cython is a build-time
# requirement, absent from the environment): what it would build, without building.
_SETUP = """
import runpy, sys, types, setuptools
cython, build = types.ModuleType("Cython"), types.ModuleType("Cython.Build")
build.cythonize = lambda extensions, **kw: extensions
sys.modules.update({"Cython": cython, "Cython.Build": build})
setuptools.setup = lambda **kw: print("ext" if kw.get("ext_modules") else "pure")
runpy.run_path("setup.py")
"""


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_setup_builds_pure_for_true_values(value: str) -> None:
    assert _python(_SETUP, value) == "pure"


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_setup_builds_extensions_otherwise(value: str) -> None:
    assert _python(_SETUP, value) == "ext"
