"""``satpulse report``: CSAT, scores, response/resolution times, SLA breaches, volume and the seed metrics per
window (1 min, 1 h, 1 d, or the whole range) and dimension value, with a total row and, on request, the same
figures over an earlier period; as a table, one JSON document, JSON lines or CSV. Pure formatting over
:mod:`sinks.queries`.

Every figure of a row, of the total and of a compared period is :func:`figures` of one merged aggregate (counts,
integer sums and duration sketches merge exactly), so a total or a whole-range row is never an average of
percentages. Undefined figures (CSAT with nothing rated, times with no sample) stay undefined: ``-`` in
tables, null in JSON, empty in CSV, never 0.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.aggregates import WindowAgg, merged
from sinks.clickhouse import ClickHouse
from sinks.queries import SeedRow, WindowRow, merge_seeds, seed_metrics, seed_totals, totals, windows_of

WINDOWS: dict[str, int | None] = {"1m": 60, "1h": 3600, "1d": 86400, "all": None}  # None: the whole range
COMPARISONS: dict[str, int | None] = {"previous": None, "last-week": 7 * 86400}  # None: the period's length
FORMATS = ("table", "json", "jsonl", "csv")
COLUMNS = ("window_start", "value", "rated", "satisfied", "csat_percent", "average_score", "created",
           "first_responses", "frt_mean_s", "frt_p50_s", "frt_p90_s", "resolved", "rt_mean_s", "rt_p50_s",
           "rt_p90_s", "frt_breaches", "rt_breaches", "seed_csat", "seed_rtt")
COMPARE_COLUMNS = ("compared_csat_percent", "csat_delta_pp")  # table and CSV columns of a comparison
TOTAL = "total"  # the window_start cell of the total row in a table


@dataclass(frozen=True, slots=True)
class Report:
    """The query and its answer: one row per (window, dimension value) and the total of those rows (value
    ``all``, window_start ``from_s``). Rows are dicts by column name; with ``compare``, each row and the total
    also hold ``compare``: the figures of the earlier period, its window_start and ``csat_delta_pp``."""

    by: str
    window: str
    from_s: int
    to_s: int
    compare: str | None
    rows: list[dict[str, Any]]
    total: dict[str, Any]


def build_report(ch: ClickHouse, by: str, window: str, cell_seconds: int, from_s: int, to_s: int,
                 stored_rollups: Sequence[int] = (), compare: str | None = None) -> Report:
    """The report of windows starting in [from_s, to_s) (``window`` ``all``: one row per value for the whole
    range, its start ``from_s``). A window size among ``stored_rollups`` (settings ``rollup_window_seconds``) is
    read from the stored roll-up rows, another one summed from cells of ``cell_seconds``; a whole range merges
    the cells. The total merges the rows shown. ``compare`` (``previous``, ``last-week``) adds, per row, the
    window one window earlier or one week earlier (for ``all``: the range shifted by its length or a week), and
    to the total the merge of every earlier window. Blocks; raises ClickHouseError, and ValueError for an
    unknown window, dimension or comparison, or a whole-range comparison that would start before 1970."""
    shift = None if compare is None else _compare_shift(window, compare, from_s, to_s)
    current = _window_rows(ch, by, window, cell_seconds, from_s, to_s, stored_rollups)
    earlier = [] if shift is None else _window_rows(ch, by, window, cell_seconds, max(0, from_s - shift),
                                                    max(0, to_s - shift), stored_rollups)
    earlier_by_key = {(r.dimension_value, r.window_start + (shift or 0)): r.agg for r in earlier}
    seeds = _seeds(ch, by, window, from_s, to_s)
    rows = []
    for r in current:
        key = (r.dimension_value, r.window_start)
        rows.append(_row(r.dimension_value, r.window_start, r.agg, seeds.get(key), shift,
                         earlier_by_key.get(key, WindowAgg())))
    shown_seeds = [seed for r in current if (seed := seeds.get((r.dimension_value, r.window_start)))]
    total = _row("all", from_s, merged(r.agg for r in current), merge_seeds("all", shown_seeds, from_s), shift,
                 merged(r.agg for r in earlier))
    return Report(by, window, from_s, to_s, compare, rows, total)


def _compare_shift(window: str, compare: str, from_s: int, to_s: int) -> int:
    """Seconds between a period and the one ``compare`` sets beside it: one window (``previous``; for ``all``
    the range's length) or a week (``last-week``). Raises ValueError for an unknown comparison or window, or
    when a whole range's earlier period would start before 1970 (give both ``--from`` and ``--to``)."""
    if compare not in COMPARISONS:
        raise ValueError(f"unknown comparison {compare!r}: one of {', '.join(COMPARISONS)}")
    size = _size(window)
    shift = COMPARISONS[compare] or size or to_s - from_s
    if size is None and from_s - shift < 0:
        raise ValueError(f"--compare {compare} with --window all compares the range shifted back by {shift}s, "
                         "which starts before 1970: give --from and --to")
    return shift


def _size(window: str) -> int | None:
    """Seconds of ``window``, None for the whole range. Raises ValueError for an unknown window."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}: one of {', '.join(WINDOWS)}")
    return WINDOWS[window]


def _window_rows(ch: ClickHouse, by: str, window: str, cell_seconds: int, from_s: int, to_s: int,
                 stored_rollups: Sequence[int]) -> list[WindowRow]:
    """Windows of ``window`` starting in [from_s, to_s); for ``all`` one row per value starting at ``from_s``."""
    size = _size(window)
    if size is None:
        return [WindowRow(r.dimension_value, from_s, r.agg) for r in totals(ch, by, cell_seconds, from_s, to_s)]
    return windows_of(ch, by, size, cell_seconds, stored_rollups, from_s, to_s)


def _seeds(ch: ClickHouse, by: str, window: str, from_s: int, to_s: int) -> dict[tuple[str, int], SeedRow]:
    """The seed metrics by (value, window start) of the rows of :func:`_window_rows`."""
    size = _size(window)
    if size is None:
        return {(s.dimension_value, from_s): s for s in seed_totals(ch, by, from_s, to_s)}
    return {(s.dimension_value, s.window_start): s for s in seed_metrics(ch, by, size, from_s, to_s)}


def _row(value: str, window_start: int, agg: WindowAgg, seed: SeedRow | None, shift: int | None,
         earlier: WindowAgg) -> dict[str, Any]:
    """One row by column name; with a ``shift``, ``compare`` holds the figures of ``earlier``, the aggregate of
    the period ``shift`` seconds before."""
    row: dict[str, Any] = {"window_start": _iso(window_start), "value": value, **figures(agg),
                           "seed_csat": seed.seed_csat if seed else None, "seed_rtt": seed.seed_rtt if seed else None}
    if shift is not None:
        delta = (None if agg.csat_percent is None or earlier.csat_percent is None
                 else agg.csat_percent - earlier.csat_percent)
        row["compare"] = {"window_start": _iso(window_start - shift), **figures(earlier), "csat_delta_pp": delta}
    return row


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def figures(a: WindowAgg) -> dict[str, Any]:
    """The headline figures of an aggregate (one window, or a whole period of merged cells) by column name;
    None where undefined (CSAT with nothing rated, times with no sample). Shared by the report and the
    dashboard page."""
    return {
        "rated": a.rated, "satisfied": a.satisfied, "csat_percent": a.csat_percent,
        "average_score": a.average_score, "created": a.created, "first_responses": a.first_responses,
        "frt_mean_s": a.mean_first_response_seconds, "frt_p50_s": a.first_response_quantile_seconds(0.5),
        "frt_p90_s": a.first_response_quantile_seconds(0.9), "resolved": a.resolved,
        "rt_mean_s": a.mean_resolution_seconds, "rt_p50_s": a.resolution_quantile_seconds(0.5),
        "rt_p90_s": a.resolution_quantile_seconds(0.9), "frt_breaches": a.first_response_breaches,
        "rt_breaches": a.resolution_breaches,
    }


def render(report: Report, fmt: str) -> str:
    """``report`` as ``table`` (aligned text, rows then the total row), ``json`` (one document: the query
    parameters, ``rows`` and ``total``), ``jsonl`` (one object per row, no total) or ``csv`` (rows, no total).
    A comparison is a nested ``compare`` object in JSON and the columns of COMPARE_COLUMNS in a table or CSV.
    Pure; raises ValueError for an unknown format."""
    if fmt == "json":
        return json.dumps({"by": report.by, "window": report.window, "from": _iso(report.from_s),
                           "to": _iso(report.to_s), "compare": report.compare, "rows": report.rows,
                           "total": report.total}, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in report.rows)
    columns = COLUMNS + (COMPARE_COLUMNS if report.compare else ())
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(_flat(r) for r in report.rows)
        return out.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    lines = [[_text(r[c]) for c in columns] for r in (*map(_flat, report.rows), _flat(report.total))]
    lines[-1][0] = TOTAL
    return aligned([list(columns), *lines])


def aligned(lines: Sequence[Sequence[str]]) -> str:
    """Text lines of equally many cells as a table: every column right-aligned to its widest cell. Pure."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []
    return "".join("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) + "\n" for line in lines)


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its comparison as the COMPARE_COLUMNS (table and CSV)."""
    flat = {k: v for k, v in row.items() if k != "compare"}
    if "compare" in row:
        flat.update(compared_csat_percent=row["compare"]["csat_percent"],
                    csat_delta_pp=row["compare"]["csat_delta_pp"])
    return flat


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
