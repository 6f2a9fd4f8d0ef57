"""Token-bucket (GCRA) math: the Cython twin unless GATEWAY_NO_EXTENSIONS=1 or it is not built.

The API, state layout, units and ranges are documented in ``_bucket_py``, the
single source of both twins.
"""

from typing import TYPE_CHECKING

from . import NO_EXTENSIONS

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._bucket_py import (
        FULL_STATE,
        IMPLEMENTATION,
        MAX_AMOUNT,
        MAX_CAPACITY,
        MAX_PERIOD_US,
        MAX_TAT_US,
        MAX_TIME_US,
        NEVER,
        refill,
        settle,
        take,
    )
else:
    try:
        from ._bucket_c import (
            FULL_STATE,
            IMPLEMENTATION,
            MAX_AMOUNT,
            MAX_CAPACITY,
            MAX_PERIOD_US,
            MAX_TAT_US,
            MAX_TIME_US,
            NEVER,
            refill,
            settle,
            take,
        )
    except ImportError:  # pragma: no cover
        from ._bucket_py import (
            FULL_STATE,
            IMPLEMENTATION,
            MAX_AMOUNT,
            MAX_CAPACITY,
            MAX_PERIOD_US,
            MAX_TAT_US,
            MAX_TIME_US,
            NEVER,
            refill,
            settle,
            take,
        )

__all__ = (
    "FULL_STATE",
    "IMPLEMENTATION",
    "MAX_AMOUNT",
    "MAX_CAPACITY",
    "MAX_PERIOD_US",
    "MAX_TAT_US",
    "MAX_TIME_US",
    "NEVER",
    "refill",
    "settle",
    "take",
)
