"""Read-side queries over the window cells (shared by reports, the demo, tests and dashboards).

Partition rows are merged with FINAL (latest version per source partition) and then summed, so results are
correct without waiting for background merges, on ClickHouse 18.16 and current releases alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from sinks.clickhouse import ClickHouse
from streams.windows import SCORE_SCALE


@dataclass(frozen=True, slots=True)
class CsatRow:
    dimension_value: str
    window_start: int  # epoch seconds; 0 for totals
    rated: int
    satisfied: int
    scored: int
    score_micros: int

    @property
    def csat_percent(self) -> float | None:
        """100 x satisfied / rated; None when rated = 0."""
        return 100.0 * self.satisfied / self.rated if self.rated else None

    @property
    def average_score(self) -> float | None:
        return self.score_micros / SCORE_SCALE / self.scored if self.scored else None


def csat_by_window(ch: ClickHouse, dimension: str, window_seconds: int, from_s: int = 0,
                   to_s: int = 2**32 - 1) -> list[CsatRow]:
    """One row per (dimension value, window) with window_start in [from_s, to_s)."""
    rows = ch.query(
        "SELECT dimension_value, toUInt32(window_start) AS ws, sum(rated), sum(satisfied), sum(scored), "
        f"sum(score_micros) FROM {ch.database}.feedback_window_partials FINAL "
        "WHERE dimension = %(d)s AND window_seconds = %(w)s "
        "AND toUInt32(window_start) >= %(f)s AND toUInt32(window_start) < %(t)s "
        "GROUP BY dimension_value, ws ORDER BY dimension_value, ws",
        {"d": dimension, "w": window_seconds, "f": from_s, "t": to_s})
    return [CsatRow(str(v), int(ws), int(r), int(s), int(n), int(m)) for v, ws, r, s, n, m in rows]


def csat_totals(ch: ClickHouse, dimension: str, window_seconds: int, from_s: int = 0,
                to_s: int = 2**32 - 1) -> list[CsatRow]:
    """One row per dimension value, summed over the windows in [from_s, to_s) (counts merge exactly)."""
    totals: dict[str, list[int]] = {}
    for row in csat_by_window(ch, dimension, window_seconds, from_s, to_s):
        acc = totals.setdefault(row.dimension_value, [0, 0, 0, 0])
        for i, n in enumerate((row.rated, row.satisfied, row.scored, row.score_micros)):
            acc[i] += n
    return [CsatRow(v, 0, *acc) for v, acc in sorted(totals.items())]
