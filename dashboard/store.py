"""The dashboard's reads from ClickHouse: blocking, one connection, called on the thread that owns it."""

from __future__ import annotations

from dashboard.model import PERIODS, WEEK_SECONDS, Snapshot
from sinks.clickhouse import ClickHouse
from sinks.queries import totals, windows

LONGEST = max(PERIODS.values())


def dead_letters(ch: ClickHouse, from_s: int, to_s: int) -> list[tuple[str, str, int, int]]:
    """(reason, stage, count, latest failure in epoch seconds) of the dead letters that failed in
    [from_s, to_s), one row per origin (FINAL)."""
    rows = ch.query(
        "SELECT reason, stage, count(), toUInt32(max(failed_at)) "
        f"FROM {ch.database}.dead_letters FINAL "
        "WHERE toUInt32(failed_at) >= %(f)s AND toUInt32(failed_at) < %(t)s GROUP BY reason, stage",
        {"f": from_s, "t": to_s})
    return [(str(reason), str(stage), int(count), int(latest)) for reason, stage, count, latest in rows]


def read_snapshot(ch: ClickHouse, dimension: str, period: str, now_s: int, cell_seconds: int) -> Snapshot:
    """Everything one dashboard answer needs (:class:`dashboard.model.Snapshot`), in five queries. Blocks;
    raises ClickHouseError."""
    start = now_s - PERIODS[period]
    return Snapshot(
        all_cells=windows(ch, "all", cell_seconds, None, now_s - LONGEST, now_s),
        all_cells_last_week=windows(ch, "all", cell_seconds, None, now_s - LONGEST - WEEK_SECONDS,
                                    now_s - WEEK_SECONDS),
        by_value=totals(ch, dimension, cell_seconds, start, now_s),
        by_value_last_week=totals(ch, dimension, cell_seconds, start - WEEK_SECONDS, now_s - WEEK_SECONDS),
        dead_letters=dead_letters(ch, start, now_s),
    )
