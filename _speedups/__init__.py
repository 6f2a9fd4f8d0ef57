"""Hot-path kernels, each a Cython twin beside a pure-Python twin.

A leaf package: it imports nothing from ``gateway``. Each kernel has a selector
module (``sse``, ``tokens``, ``cachekey``, ``bucket``) that loads the compiled
``_<kernel>_c`` twin unless ``GATEWAY_NO_EXTENSIONS`` is ``1``, ``true`` or
``yes`` (any case; ``0``, ``false``, ``no`` or unset keep the extensions; the
gateway's settings refuse any other value), the interpreter is not CPython, or
the import fails; otherwise it loads ``_<kernel>_py``. Both twins behave
identically; tests run every case on both.
"""

from __future__ import annotations

import importlib
import os
import platform

NO_EXTENSIONS: bool = os.environ.get("GATEWAY_NO_EXTENSIONS", "").strip().lower() in (
    "1",
    "true",
    "yes",
) or (platform.python_implementation() != "CPython")

KERNELS: tuple[str, ...] = ("sse", "tokens", "cachekey", "bucket")


def implementations() -> dict[str, str]:
    """Which twin each kernel loaded: ``{"sse": "c" | "py", ...}``."""
    out: dict[str, str] = {}
    for name in KERNELS:
        try:
            mod = importlib.import_module(f"_speedups.{name}")
        except ImportError:  # kernel not built into this release
            continue
        out[name] = getattr(mod, "IMPLEMENTATION", "py")
    return out
