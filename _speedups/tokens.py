"""Exact cl100k_base / o200k_base token counts.

The Cython twin unless GATEWAY_NO_EXTENSIONS=1 or it is not built.
"""

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._tokens_py import ENCODINGS, IMPLEMENTATION, count_tokens
else:
    try:
        from ._tokens_c import ENCODINGS, IMPLEMENTATION, count_tokens
    except ImportError:  # pragma: no cover
        from ._tokens_py import ENCODINGS, IMPLEMENTATION, count_tokens

__all__ = ("ENCODINGS", "IMPLEMENTATION", "count_tokens")
