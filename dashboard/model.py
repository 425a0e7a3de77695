"""What the dashboard page shows, as a pure function of query results (no I/O, no clock: ``now_s`` is given).

Periods are relative to ``now_s`` (wall clock) and hold the window cells whose event-time start lies in
[now - period, now), as :func:`sinks.queries.totals` counts them; "last week" is the same range shifted back by
seven days. Every CSAT is None where nothing was rated (the page shows "no ratings", never 0 %).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domain.aggregates import WindowAgg
from sinks.queries import WindowRow
from sinks.report import figures

WEEK_SECONDS = 7 * 86_400
PERIODS = {"15m": 900, "1h": 3_600, "24h": 86_400}  # selectable periods, seconds back from now
PERIOD_LABELS = {"15m": "last 15 min", "1h": "last hour", "24h": "last 24 h"}
SERIES_BUCKET_SECONDS = {"15m": 60, "1h": 60, "24h": 900}  # chart resolution per period (rounded to whole cells)
NOW_LOOKBACK_SECONDS = PERIODS["15m"]  # "now" is the latest cell with ratings within this
SEVERITY_ORDER = ("critical", "page", "warning", "ticket", "info")  # most urgent first; others after


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The query results one answer is built from.

    ``all_cells`` / ``all_cells_last_week``: the 'all' dimension's cells over the longest period back from now
    and over the same range a week earlier (one row per cell). ``by_value`` / ``by_value_last_week``: one
    merged row per value of the selected dimension over the selected period, now and a week earlier.
    ``dead_letters``: (reason, stage, count, latest failure in epoch seconds) within the selected period."""

    all_cells: Sequence[WindowRow]
    all_cells_last_week: Sequence[WindowRow]
    by_value: Sequence[WindowRow]
    by_value_last_week: Sequence[WindowRow]
    dead_letters: Sequence[tuple[str, str, int, int]]


@dataclass(frozen=True, slots=True)
class Alerts:
    """Alertmanager's answer: ``configured`` False when no URL is set; ``error`` when it could not be read;
    ``alerts``: the raw objects of ``GET /api/v2/alerts``."""

    configured: bool
    error: str | None = None
    alerts: Sequence[Mapping[str, Any]] = ()


def parse_request(query: Mapping[str, str], dimensions: Sequence[str]) -> tuple[str, str]:
    """(dimension, period) from the query string, defaults ``dimensions[0]`` and 1 h. Raises ValueError for an
    unknown period or a dimension not in ``dimensions`` (the dimensions the workers keep, without 'all')."""
    dimension = query.get("dimension", dimensions[0])
    period = query.get("period", "1h")
    if dimension not in dimensions:
        raise ValueError(f"unknown dimension {dimension!r}; one of {', '.join(dimensions)}")
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}; one of {', '.join(PERIODS)}")
    return dimension, period


def merged(rows: Iterable[WindowRow], from_s: int, to_s: int) -> WindowAgg:
    """The aggregate of the rows whose window starts in [from_s, to_s)."""
    total = WindowAgg()
    for row in rows:
        if from_s <= row.window_start < to_s:
            total.merge(row.agg)
    return total


def trend(now: float | None, last_week: float | None) -> float | None:
    """CSAT change in percentage points against last week; None unless both are defined."""
    return None if now is None or last_week is None else now - last_week


def compared(agg: WindowAgg, last_week: WindowAgg) -> dict[str, Any]:
    """:func:`sinks.report.figures` of ``agg`` plus last week's rated and CSAT and the trend."""
    out = figures(agg)
    out["last_week_rated"] = last_week.rated
    out["last_week_csat_percent"] = last_week.csat_percent
    out["trend_pp"] = trend(agg.csat_percent, last_week.csat_percent)
    return out


def headline(snapshot: Snapshot, now_s: int, cell_seconds: int) -> list[dict[str, Any]]:
    """One tile for "now" (the latest cell with ratings in the last 15 min; an empty range when there is none)
    and one per period, each with :func:`compared` figures of the 'all' dimension, ``from`` and ``to``."""
    recent = [r.window_start for r in snapshot.all_cells
              if r.agg.rated and r.window_start >= now_s - NOW_LOOKBACK_SECONDS]
    latest = max(recent, default=now_s)
    ranges = [("now", latest, latest + cell_seconds if recent else now_s)]
    ranges += [(name, now_s - seconds, now_s) for name, seconds in PERIODS.items()]
    return [{"period": name, "from": start, "to": end,
             **compared(merged(snapshot.all_cells, start, end),
                        merged(snapshot.all_cells_last_week, start - WEEK_SECONDS, end - WEEK_SECONDS))}
            for name, start, end in ranges]


def series(snapshot: Snapshot, period: str, now_s: int, cell_seconds: int) -> dict[str, Any]:
    """CSAT and rated per bucket over the period, and last week's CSAT at the same times (shifted onto this
    week's axis). ``t``: bucket starts in epoch seconds; undefined CSAT is None (a gap, not 0)."""
    nominal = SERIES_BUCKET_SECONDS[period]
    bucket = max(cell_seconds, nominal // cell_seconds * cell_seconds)
    first = (now_s - PERIODS[period]) // bucket * bucket
    starts = list(range(first, now_s, bucket))
    this = _bucketed(snapshot.all_cells, bucket, 0)
    before = _bucketed(snapshot.all_cells_last_week, bucket, WEEK_SECONDS)
    empty = WindowAgg()
    return {
        "bucket_seconds": bucket, "t": starts,
        "csat": [this.get(t, empty).csat_percent for t in starts],
        "rated": [this.get(t, empty).rated for t in starts],
        "last_week_csat": [before.get(t, empty).csat_percent for t in starts],
    }


def _bucketed(rows: Iterable[WindowRow], bucket: int, shift: int) -> dict[int, WindowAgg]:
    """Rows merged per bucket of ``bucket`` seconds, keyed by bucket start plus ``shift``."""
    out: dict[int, WindowAgg] = {}
    for row in rows:
        out.setdefault(row.window_start // bucket * bucket + shift, WindowAgg()).merge(row.agg)
    return out


def by_value(snapshot: Snapshot) -> list[dict[str, Any]]:
    """One row per dimension value over the period (most rated first), with last week's CSAT and the trend; a
    value seen only last week is left out."""
    before = {r.dimension_value: r.agg for r in snapshot.by_value_last_week}
    rows = [{"value": r.dimension_value, **compared(r.agg, before.get(r.dimension_value, WindowAgg()))}
            for r in snapshot.by_value]
    return sorted(rows, key=lambda r: (-r["rated"], r["value"]))


def dead_letters(snapshot: Snapshot) -> dict[str, Any]:
    """Dead letters within the period: the total and one row per (reason, stage), most frequent first."""
    ordered = sorted(snapshot.dead_letters, key=lambda d: (-d[2], d[0], d[1]))
    return {"total": sum(count for _, _, count, _ in ordered),
            "by_reason": [{"reason": reason, "stage": stage, "count": count, "latest": latest}
                          for reason, stage, count, latest in ordered]}


def alerts_view(alerts: Alerts) -> dict[str, Any]:
    """The firing alerts (Alertmanager state ``active``), most severe and then oldest first, each with its
    name, severity, summary, start and the labels that tell where (all but alertname and severity)."""
    firing = []
    for alert in alerts.alerts:
        if alert.get("status", {}).get("state") != "active":
            continue
        labels = dict(alert.get("labels", {}))
        annotations = alert.get("annotations", {})
        firing.append({
            "name": labels.pop("alertname", "unnamed"), "severity": labels.pop("severity", ""),
            "summary": annotations.get("summary") or annotations.get("description") or "",
            "since": alert.get("startsAt", ""),
            "where": ", ".join(f"{k}={v}" for k, v in sorted(labels.items())),
        })
    rank = {name: i for i, name in enumerate(SEVERITY_ORDER)}
    firing.sort(key=lambda a: (rank.get(a["severity"], len(rank)), a["since"], a["name"]))
    return {"configured": alerts.configured, "error": alerts.error, "firing": firing}


def build(snapshot: Snapshot, alerts: Alerts, dimension: str, period: str, now_s: int, cell_seconds: int,
          dimensions: Sequence[str]) -> dict[str, Any]:
    """The JSON answer of ``/dashboard/data`` for one dimension and period: ``headline`` (now and every period,
    'all' dimension), ``series`` (the chart), ``by_value`` (the table), ``dead_letters`` and ``alerts``."""
    return {
        "now": now_s, "dimension": dimension, "dimensions": list(dimensions), "period": period,
        "periods": PERIOD_LABELS, "cell_seconds": cell_seconds,
        "headline": headline(snapshot, now_s, cell_seconds),
        "series": series(snapshot, period, now_s, cell_seconds),
        "by_value": by_value(snapshot),
        "dead_letters": dead_letters(snapshot),
        "alerts": alerts_view(alerts),
    }
