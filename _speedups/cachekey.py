"""Response-cache key: the Cython twin unless GATEWAY_NO_EXTENSIONS=1 or it is not built.

The canonical encoding, the fields left out and the key layout
(``gw:{tenant}:cache:<digest>``) are documented in ``_cachekey_py``.
"""

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._cachekey_py import (
        IMPLEMENTATION,
        KINDS,
        MAGIC,
        MAX_DEPTH,
        TRANSPORT_FIELDS,
        cache_key,
        canonical_encoding,
    )
else:
    try:
        from ._cachekey_c import (
            IMPLEMENTATION,
            KINDS,
            MAGIC,
            MAX_DEPTH,
            TRANSPORT_FIELDS,
            cache_key,
            canonical_encoding,
        )
    except ImportError:  # pragma: no cover
        from ._cachekey_py import (
            IMPLEMENTATION,
            KINDS,
            MAGIC,
            MAX_DEPTH,
            TRANSPORT_FIELDS,
            cache_key,
            canonical_encoding,
        )

__all__ = (
    "IMPLEMENTATION",
    "KINDS",
    "MAGIC",
    "MAX_DEPTH",
    "TRANSPORT_FIELDS",
    "cache_key",
    "canonical_encoding",
)
