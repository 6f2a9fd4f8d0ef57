"""bench/rounds.py: ``e2e.py --rounds N`` keeps, per cell, the round with the median rps."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "bench_rounds", Path(__file__).resolve().parents[2] / "bench" / "rounds.py"
)
assert _SPEC is not None and _SPEC.loader is not None
rounds = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rounds)


@dataclass
class _Cell:
    concurrency: int
    rps: float | None = None
    p99_ms: float | None = None


@dataclass
class _Mode:
    status: str = "ok"
    note: str = ""
    cells: dict[int, _Cell] = field(default_factory=dict)
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    rss_mib: float | None = None


def _mode(rps: list[float], ttfb: float, rss: float, status: str = "ok") -> _Mode:
    cells = {c: _Cell(c, r, p99_ms=r / 100) for c, r in zip((1, 32), rps, strict=True)}
    return _Mode(status, "", cells, ttfb, ttfb * 2, rss)


def test_each_cell_is_its_median_round_whole() -> None:
    runs = [_mode([100, 900], 1.0, 50), _mode([300, 700], 3.0, 51), _mode([200, 800], 2.0, 52)]
    m = rounds.merge(runs)
    assert m.cells[1].rps == 200 and m.cells[1].p99_ms == 2.0  # the whole median cell
    assert m.cells[32].rps == 800 and m.cells[32].p99_ms == 8.0  # another round's
    assert (m.ttfb_p50_ms, m.ttfb_p99_ms) == (2.0, 4.0)
    assert m.rss_mib == 52 and m.note == ""  # nothing to report among the problems


def test_failed_rounds_are_left_out_and_said() -> None:
    runs = [_mode([100, 900], 1.0, 50), _mode([0, 0], 9.0, 9, status="bad response")]
    m = rounds.merge(runs)
    assert m.cells[32].rps == 900 and "1 of 2 rounds failed" in m.note
    assert rounds.merge([runs[1]]).status == "bad response"


def test_one_round_is_that_round() -> None:
    run = _mode([100, 900], 1.0, 50)
    assert rounds.merge([run]) is run
