"""``bench/e2e.py --rounds N``: every target and mode measured N times, interleaved.

On a shared VM the machine's speed drifts over minutes (other tenants, the host), so a
target measured once, minutes after the bare pass-through it is compared with, carries
that drift into its ratio. With rounds, each round runs every target and mode once, in
the same order, and the table shows for each cell the round with the median requests/s
(its whole cell: rps, p50, p99, CPU and Redis counts stay one run's numbers). TTFB is
the median of the rounds' percentiles; RSS and metrics are the last round's.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

__all__ = ["merge"]


def merge(runs: list[Any]) -> Any:
    """One ``ModeResult`` from the rounds' (``runs``, oldest first)."""
    ok = [m for m in runs if m.status == "ok"]
    if not ok:
        return runs[-1]
    last = ok[-1]
    if len(runs) == 1:
        return last
    cells = {}
    for c in sorted({c for m in ok for c in m.cells}):
        measured = [m.cells[c] for m in ok if c in m.cells and m.cells[c].rps is not None]
        if not measured:
            cells[c] = last.cells.get(c)
            continue
        measured.sort(key=lambda cell: cell.rps)
        cells[c] = measured[len(measured) // 2]
    p50 = [m.ttfb_p50_ms for m in ok if m.ttfb_p50_ms is not None]
    p99 = [m.ttfb_p99_ms for m in ok if m.ttfb_p99_ms is not None]
    failed = len(runs) - len(ok)  # said among the problems; the rest is in the header
    note = f"{failed} of {len(runs)} rounds failed: the median of the others" if failed else ""
    return dataclasses.replace(
        last,
        cells=cells,
        ttfb_p50_ms=statistics.median(p50) if p50 else None,
        ttfb_p99_ms=statistics.median(p99) if p99 else None,
        note="; ".join(x for x in (last.note, note) if x),
    )
