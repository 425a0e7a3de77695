"""Retention: delete rows older than the configured number of days, per kind of row (``satpulse retention``).

ClickHouse 18.16 has no TTL (it arrived in 19.6), so this submits ``ALTER TABLE ... DELETE`` mutations
(:mod:`sinks.mutations`). Run it from a
scheduler (docs/operations.md#retention). Cut-offs are whole UTC days, so no stored 1 h or 1 day cell is ever cut
in two; the per-source checkpoint rows of ``window_cells`` (the sources' high-water marks) are never deleted."""

from __future__ import annotations

from dataclasses import dataclass

from domain.windows import CHECKPOINT_KEY
from satpulse.settings import Settings
from sinks.clickhouse import ClickHouse
from sinks.mutations import delete_rows, matching_rows

_DAY = 86400
_CELLS = "window_seconds = %(size)s AND dimension != %(checkpoint)s AND "


@dataclass(frozen=True, slots=True)
class RetentionStep:
    """One deletion: rows of ``table`` (of ``kind``) older than ``cutoff`` (epoch seconds); ``rows`` matched
    when planned; ``scheduled``: a mutation was submitted (False for a dry run or when nothing matched)."""

    kind: str
    table: str
    cutoff: int
    rows: int
    scheduled: bool


def _plan(settings: Settings) -> list[tuple[str, str, str, int, int]]:
    """(kind, table, condition with %(cutoff)s, window size or 0, days) for every kind with a retention."""
    cells = f"{_CELLS}window_start < toDateTime(%(cutoff)s)"
    plan = [
        ("events", "feedback_events", "event_time < toDateTime(%(cutoff)s)", 0, settings.retention_events_days),
        ("events", "ticket_events", "event_time < toDateTime(%(cutoff)s)", 0, settings.retention_events_days),
        ("minute cells", "window_cells", cells, settings.window_seconds, settings.retention_minute_cells_days),
        ("hour cells", "window_cells", cells, 3600, settings.retention_hour_cells_days),
        ("day cells", "window_cells", cells, _DAY, settings.retention_day_cells_days),
        ("dead letters", "dead_letters", "failed_at < toDateTime(%(cutoff)s)", 0,
         settings.retention_dead_letters_days),
    ]
    return [step for step in plan if step[4] > 0]


def apply_retention(ch: ClickHouse, settings: Settings, now: int, dry_run: bool = False) -> list[RetentionStep]:
    """For every kind of row with a retention of N > 0 days (settings ``retention_*_days``), delete its rows
    older than the start of the UTC day N days before ``now`` (epoch seconds) with an ``ALTER TABLE ... DELETE``
    mutation; a kind with no such row gets no mutation (each one rewrites the table's parts). Returns the steps
    planned. Blocks until the mutations are submitted; ClickHouse applies them in the background (see
    :func:`sinks.mutations.wait_for_mutations`). Raises ClickHouseError. Idempotent: a second run deletes
    nothing more."""
    steps = []
    for kind, table, condition, size, days in _plan(settings):
        cutoff = (now - days * _DAY) // _DAY * _DAY
        params = {"cutoff": cutoff, "size": size, "checkpoint": CHECKPOINT_KEY[0]}
        rows = matching_rows(ch, table, condition, params)
        if rows and not dry_run:
            delete_rows(ch, table, condition, params)
        steps.append(RetentionStep(kind, table, cutoff, rows, bool(rows) and not dry_run))
    return steps
