"""Server-sent events decoder: the Cython twin unless GATEWAY_NO_EXTENSIONS=1 or it is not built."""

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._sse_py import IMPLEMENTATION, SSEDecoder
else:
    try:
        from ._sse_c import IMPLEMENTATION, SSEDecoder
    except ImportError:  # pragma: no cover
        from ._sse_py import IMPLEMENTATION, SSEDecoder

__all__ = ("IMPLEMENTATION", "SSEDecoder")
