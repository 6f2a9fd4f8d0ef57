"""Which twin each kernel's selector loads. ``GATEWAY_NO_EXTENSIONS``: only ``1``,
``true`` or ``yes`` force the pure twins, at run time (``_speedups/__init__.py``) and at
build time (``setup.py``); ``0`` used to force them too (issue 9, item 17). Each flag
value runs in a fresh interpreter, since the flag is read at import; this run's own
selectors are checked in-process."""

from __future__ import annotations

import importlib
import importlib.util
import json

import pytest

from _speedups import KERNELS, implementations
from tests.speedups.conftest import SELECTED, run_python

FORCING = ["1", "true", "TRUE", "yes", " Yes "]
NOT_FORCING = ["", "0", "false", "no", "off"]
_built = importlib.util.find_spec("_speedups._sse_c") is not None


# Each selector's own IMPLEMENTATION, not implementations() (which reads the same names).
_LOADED = (
    "import importlib, json, _speedups; print(json.dumps({k: importlib.import_module("
    "'_speedups.' + k).IMPLEMENTATION for k in _speedups.KERNELS}))"
)


@pytest.mark.parametrize("value", FORCING)
def test_true_values_force_the_pure_twins(value: str) -> None:
    assert json.loads(run_python(_LOADED, value)) == dict.fromkeys(KERNELS, "py")


@pytest.mark.skipif(not _built, reason="the compiled twins are not built")
@pytest.mark.parametrize("value", [None, *NOT_FORCING])
def test_other_values_keep_the_compiled_twins(value: str | None) -> None:
    assert json.loads(run_python(_LOADED, value)) == dict.fromkeys(KERNELS, "c")


@pytest.mark.parametrize("kernel", KERNELS)
def test_this_run_loaded_the_twin_the_flag_implies(kernel: str) -> None:
    """The selector says it loaded the twin this run must use, and what it exports is
    that twin's code (not only its name)."""
    selector = importlib.import_module(f"_speedups.{kernel}")
    twin = importlib.import_module(f"_speedups._{kernel}_{SELECTED}")
    assert selector.IMPLEMENTATION == SELECTED
    assert implementations()[kernel] == SELECTED
    exported = [n for n in selector.__all__ if callable(getattr(selector, n))]
    assert exported and all(getattr(selector, n) is getattr(twin, n) for n in exported)


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
    assert run_python(_SETUP, value) == "pure"


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_setup_builds_extensions_otherwise(value: str) -> None:
    assert run_python(_SETUP, value) == "ext"
