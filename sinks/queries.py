"""Read-side queries over window cells (shared by reports, the demo, tests and dashboards).

Source rows are deduplicated with FINAL (latest version per source) and then summed, so results are correct
without waiting for background merges, on ClickHouse 18.16 and current releases alike. Coarser windows
(1 h, 1 day) are read from the stored roll-up rows (:mod:`sinks.rollups`) when the stream keeps them, else
summed from the cells at query time: every aggregate is a count, an integer sum or a sketch of counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from domain.aggregates import WindowAgg
from domain.entities import DIMENSION_FIELDS
from sinks.clickhouse import ClickHouse
from sinks.declared_columns import CELLS


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
        f"SELECT dimension_value, intDiv(toUInt32(window_start), %(size)s) * %(size)s AS ws, {CELLS.merged_sql} "
        f"FROM {ch.database}.window_cells FINAL "
        "WHERE dimension = %(d)s AND window_seconds = %(w)s "
        "AND toUInt32(window_start) >= %(f)s AND toUInt32(window_start) < %(t)s "
        "GROUP BY dimension_value, ws ORDER BY dimension_value, ws",
        {"d": dimension, "w": cell_seconds, "f": from_s, "t": to_s, "size": size})
    out = [WindowRow(str(r[0]), int(r[1]), CELLS.decode(r[2:])) for r in rows]
    return [row for row in out if not row.agg.is_empty()]  # cells emptied by withdrawn contributions


def windows_of(ch: ClickHouse, dimension: str, size: int, cell_seconds: int, stored: Sequence[int],
               from_s: int = 0, to_s: int = 2**32 - 1) -> list[WindowRow]:
    """Windows of ``size`` seconds starting in [from_s, to_s): the stored rows of that size when ``size`` is
    the cell size or one of the ``stored`` roll-ups (settings ``rollup_window_seconds``), else cells of
    ``cell_seconds`` summed at query time. Raises ValueError when ``size`` is not a multiple of the cell size."""
    if size == cell_seconds or size in stored:
        return windows(ch, dimension, size, None, from_s, to_s)
    return windows(ch, dimension, cell_seconds, size, from_s, to_s)


def totals(ch: ClickHouse, dimension: str, cell_seconds: int, from_s: int = 0, to_s: int = 2**32 - 1
           ) -> list[WindowRow]:
    """One row per dimension value over [from_s, to_s) (a rolling view: last 15 min, 1 h, 24 h ...)."""
    merged: dict[str, WindowAgg] = {}
    for row in windows(ch, dimension, cell_seconds, None, from_s, to_s):
        merged.setdefault(row.dimension_value, WindowAgg()).merge(row.agg)
    return [WindowRow(v, 0, agg) for v, agg in sorted(merged.items())]


@dataclass(frozen=True, slots=True)
class SeedRow:
    """The source document's formulas, kept as published (docs/metrics.md#seed-formulas)."""

    dimension_value: str
    window_start: int
    seed_csat: float | None  # (1/N) sum 5 R / (R + D), R score 1-5, D resolution time of that case in hours
    seed_csat_n: int
    seed_rtt: float | None  # (1/M) sum T / (T - P), T resolved and P created as Unix seconds, T > P
    seed_rtt_m: int


_CASES_SQL = """
    SELECT ticket_id,
           countIf(status = 'created') > 0 AS has_created,
           minIf(event_time_ms, status = 'created') AS created_ms,
           maxIf(event_time_ms, status = 'resolved') AS resolved_ms,
           countIf(status = 'resolved') > 0 AS has_resolved,
           argMax({dim}, event_time_ms) AS dim_value
    FROM {db}.ticket_events GROUP BY ticket_id"""


def seed_metrics(ch: ClickHouse, dimension: str, window_seconds: int, from_s: int = 0,
                 to_s: int = 2**32 - 1) -> list[SeedRow]:
    """Seed CSAT per window of the rating's event time and seed RTT per window of the resolution time,
    by ``dimension`` (a column name or ``all``). Ratings use their latest version (ties: highest event id, as
    the stream does)."""
    if dimension not in ("all", *DIMENSION_FIELDS):
        raise ValueError(f"unknown dimension {dimension!r}")
    dim = "'all'" if dimension == "all" else f"ifNull(toString({dimension}), 'unknown')"
    db, params = ch.database, {"size": window_seconds, "f": from_s, "t": to_s}
    csat = ch.query(
        f"""SELECT dim_value, intDiv(ts, %(size)s) * %(size)s AS ws, avg(5 * score / (score + hours)), count()
        FROM (
            SELECT rating_id, argMax(ifNull(score, -1), (rating_version, event_id)) AS score,
                   argMax(ifNull(ticket_id, ''), (rating_version, event_id)) AS ticket_id,
                   argMax(toUInt32(event_time), (rating_version, event_id)) AS ts,
                   argMax({dim}, (rating_version, event_id)) AS dim_value
            FROM {db}.feedback_events GROUP BY rating_id
        ) AS ratings ALL INNER JOIN (
            SELECT ticket_id, (resolved_ms - created_ms) / 3600000 AS hours
            FROM ({_CASES_SQL.format(dim="''", db=db)})
            WHERE has_created AND has_resolved AND resolved_ms >= created_ms
        ) AS cases USING ticket_id
        WHERE score >= 0 AND ts >= %(f)s AND ts < %(t)s
        GROUP BY dim_value, ws""", params)
    rtt = ch.query(
        f"""SELECT dim_value, intDiv(intDiv(resolved_ms, 1000), %(size)s) * %(size)s AS ws,
                   avg(intDiv(resolved_ms, 1000) / (intDiv(resolved_ms, 1000) - intDiv(created_ms, 1000))), count()
        FROM ({_CASES_SQL.format(dim=dim, db=db)})
        WHERE has_created AND has_resolved AND intDiv(resolved_ms, 1000) > intDiv(created_ms, 1000)
          AND intDiv(resolved_ms, 1000) >= %(f)s AND intDiv(resolved_ms, 1000) < %(t)s
        GROUP BY dim_value, ws""", params)
    rows: dict[tuple[str, int], list[Any]] = {}
    for value, ws, mean, n in csat:
        rows.setdefault((str(value), int(ws)), [None, 0, None, 0])[0:2] = [float(mean), int(n)]
    for value, ws, mean, n in rtt:
        rows.setdefault((str(value), int(ws)), [None, 0, None, 0])[2:4] = [float(mean), int(n)]
    return [SeedRow(v, ws, *r) for (v, ws), r in sorted(rows.items())]


def seed_totals(ch: ClickHouse, dimension: str, from_s: int = 0, to_s: int = 2**32 - 1) -> list[SeedRow]:
    """One row per dimension value over [from_s, to_s) (window_start 0): the seed formulas over every rating and
    case of the range, the per-day means of :func:`seed_metrics` merged by :func:`merge_seeds`. Blocks; raises
    ValueError for an unknown dimension, ClickHouseError."""
    by_value: dict[str, list[SeedRow]] = {}
    for row in seed_metrics(ch, dimension, 86400, from_s, to_s):
        by_value.setdefault(row.dimension_value, []).append(row)
    return [merge_seeds(value, rows) for value, rows in sorted(by_value.items())]


def merge_seeds(value: str, rows: Iterable[SeedRow], window_start: int = 0) -> SeedRow:
    """``rows`` as one row of ``value``: each mean weighted by its number of terms (exact up to float rounding),
    None where no row has a term. Pure."""
    csat_sum = rtt_sum = 0.0
    n = m = 0
    for row in rows:
        csat_sum += (row.seed_csat or 0.0) * row.seed_csat_n
        rtt_sum += (row.seed_rtt or 0.0) * row.seed_rtt_m
        n += row.seed_csat_n
        m += row.seed_rtt_m
    return SeedRow(value, window_start, csat_sum / n if n else None, n, rtt_sum / m if m else None, m)
