"""Read-side queries over window cells (shared by reports, the demo, tests and dashboards).

Source rows are deduplicated with FINAL (latest version per source) and then summed, so results are correct
without waiting for background merges, on ClickHouse 18.16 and current releases alike. Coarser windows
(1 h, 1 day) are sums of the stored cells: every aggregate is a count, an integer sum or a sketch of counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sinks.clickhouse import ClickHouse
from sinks.window_store import MERGED_AGG_SQL, agg_from_row
from streams.aggregates import WindowAgg


@dataclass(frozen=True, slots=True)
class WindowRow:
    dimension_value: str
    window_start: int  # epoch seconds of the (possibly rolled-up) window; 0 for totals
    agg: WindowAgg


def windows(ch: ClickHouse, dimension: str, cell_seconds: int, rollup_seconds: int | None = None,
            from_s: int = 0, to_s: int = 2**32 - 1) -> list[WindowRow]:
    """One row per (dimension value, window) with window start in [from_s, to_s). Cells of
    ``cell_seconds`` are rolled up into windows of ``rollup_seconds`` (a multiple; default: no roll-up)."""
    size = rollup_seconds or cell_seconds
    if size % cell_seconds:
        raise ValueError(f"roll-up {size}s is not a multiple of the cell size {cell_seconds}s")
    rows = ch.query(
        f"SELECT dimension_value, intDiv(toUInt32(window_start), %(size)s) * %(size)s AS ws, {MERGED_AGG_SQL} "
        f"FROM {ch.database}.window_cells FINAL "
        "WHERE dimension = %(d)s AND window_seconds = %(w)s "
        "AND toUInt32(window_start) >= %(f)s AND toUInt32(window_start) < %(t)s "
        "GROUP BY dimension_value, ws ORDER BY dimension_value, ws",
        {"d": dimension, "w": cell_seconds, "f": from_s, "t": to_s, "size": size})
    return [WindowRow(str(r[0]), int(r[1]), agg_from_row(r[2:])) for r in rows]


def totals(ch: ClickHouse, dimension: str, cell_seconds: int, from_s: int = 0, to_s: int = 2**32 - 1
           ) -> list[WindowRow]:
    """One row per dimension value over [from_s, to_s) (a rolling view: last 15 min, 1 h, 24 h ...)."""
    merged: dict[str, WindowAgg] = {}
    for row in windows(ch, dimension, cell_seconds, None, from_s, to_s):
        merged.setdefault(row.dimension_value, WindowAgg()).merge(row.agg)
    return [WindowRow(v, 0, agg) for v, agg in sorted(merged.items())]
