"""Build the Cython twins of the _speedups kernels.

`GATEWAY_NO_EXTENSIONS=1` (or `true`, `yes`; `0` does not), or a non-CPython
interpreter, gives a pure-Python install: the same rule as `_speedups/__init__.py`.
Otherwise every `_speedups/*.pyx` is compiled and a failed compile fails the
build: a silent fallback would show up only as lost throughput.
"""

import os
import platform
import sys
from pathlib import Path

from setuptools import setup

NO_EXTENSIONS = os.environ.get("GATEWAY_NO_EXTENSIONS", "").strip().lower() in (
    "1",
    "true",
    "yes",
) or (platform.python_implementation() != "CPython")

if NO_EXTENSIONS:
    print("*** llm-gateway: Pure Python build (GATEWAY_NO_EXTENSIONS) ***", file=sys.stderr)
    setup()
else:
    from Cython.Build import cythonize
    from setuptools import Extension

    here = Path(__file__).parent
    # Hand-written .pyx twins, plus *_c.py files: a pure twin compiled as-is with
    # its .pxd (the bucket kernel is one source built twice).
    sources = sorted((here / "_speedups").glob("*.pyx")) + sorted(
        (here / "_speedups").glob("*_c.py")
    )
    extensions = [
        Extension(
            f"_speedups.{src.stem}",
            [str(src.relative_to(here))],
            extra_compile_args=["-O3"],
        )
        for src in sources
    ]
    print(f"*** llm-gateway: Accelerated build ({len(extensions)} extensions) ***", file=sys.stderr)
    setup(
        ext_modules=cythonize(
            extensions,
            language_level=3,
            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        )
    )
