"""``satpulse report``: CSAT, scores, response/resolution times, SLA breaches, volume and the seed metrics per
window and dimension value, as a table, JSON lines or CSV. Pure formatting over :mod:`sinks.queries`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sinks.clickhouse import ClickHouse
from sinks.queries import seed_metrics, windows_of
from streams.aggregates import WindowAgg

WINDOWS = {"1m": 60, "1h": 3600, "1d": 86400}
COLUMNS = ("window_start", "value", "rated", "satisfied", "csat_percent", "average_score", "created",
           "first_responses", "frt_mean_s", "frt_p50_s", "frt_p90_s", "resolved", "rt_mean_s", "rt_p50_s",
           "rt_p90_s", "frt_breaches", "rt_breaches", "seed_csat", "seed_rtt")


def report_rows(ch: ClickHouse, by: str, window: str, cell_seconds: int, from_s: int, to_s: int,
                stored_rollups: Sequence[int] = ()) -> list[dict[str, Any]]:
    """One dict per (window, dimension value) for windows starting in [from_s, to_s). A window size among
    ``stored_rollups`` (settings ``rollup_window_seconds``) is read from the stored roll-up rows, another one
    summed from cells of ``cell_seconds``. Raises ValueError for an unknown window or dimension."""
    size = WINDOWS[window]
    seeds = {(s.dimension_value, s.window_start): s for s in seed_metrics(ch, by, size, from_s, to_s)}
    rows = []
    for row in windows_of(ch, by, size, cell_seconds, stored_rollups, from_s, to_s):
        seed = seeds.get((row.dimension_value, row.window_start))
        rows.append({
            "window_start": datetime.fromtimestamp(row.window_start, UTC).isoformat(),
            "value": row.dimension_value, **figures(row.agg),
            "seed_csat": seed.seed_csat if seed else None, "seed_rtt": seed.seed_rtt if seed else None,
        })
    return rows


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


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def render(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """Rows as ``table`` (aligned text), ``json`` (one object per line) or ``csv``; undefined values are
    ``-`` in tables, null in JSON and empty in CSV."""
    if fmt == "json":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    cells = [list(COLUMNS)] + [[_cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "".join("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + "\n" for row in cells)
