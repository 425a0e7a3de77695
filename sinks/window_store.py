"""Reads and writes of window cells and clean feedback events in ClickHouse (blocking; run off the loop).

Write contract: :meth:`WindowStore.write` inserts the batch's clean events, then its window rows, each as
one block; when it returns, both are durable and the caller may acknowledge the source offsets. It raises
ClickHouseError on failure and may be retried with the same batch: rows replace themselves (same key,
same version), so a retry or a replay after a crash never counts twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sinks.clickhouse import ClickHouse
from streams.windows import CellRow, FeedbackAgg, WindowKey

PARTIAL_COLUMNS = ("dimension", "dimension_value", "window_seconds", "window_start", "source_topic",
                   "source_partition", "rated", "satisfied", "scored", "score_micros", "version", "written_at")
EVENT_COLUMNS = ("rating_id", "rating_version", "event_id", "source", "channel", "event_time", "event_time_ms",
                 "ingest_time_ms", "ticket_id", "agent", "team", "category", "product", "customer_id",
                 "native_value", "native_scale", "score", "satisfied", "comment", "source_partition",
                 "source_offset")


def _event_row(partition: int, offset: int, r: Mapping[str, Any]) -> tuple[Any, ...]:
    satisfied = None if r["satisfied"] is None else int(r["satisfied"])
    return (r["rating_id"], r["rating_version"], r["event_id"], r["source"], r["channel"],
            r["event_time"] // 1000, r["event_time"], r["ingest_time"], r["ticket_id"], r["agent"], r["team"],
            r["category"], r["product"], r["customer_id"], r["native_value"], r["native_scale"], r["score"],
            satisfied, r["comment"], partition, offset)


class WindowStore:
    """Window cells of one source topic, for one window size."""

    def __init__(self, ch: ClickHouse, source_topic: str, window_seconds: int) -> None:
        self.ch = ch
        self.db = ch.database
        self.source_topic = source_topic
        self.window_seconds = window_seconds

    def persisted_offset(self, partition: int) -> int:
        """Highest source offset already contained in stored window cells of ``partition`` (-1: none)."""
        rows = self.ch.query(
            f"SELECT count(), max(version) FROM {self.db}.feedback_window_partials "
            "WHERE source_topic = %(t)s AND source_partition = %(p)s AND window_seconds = %(w)s",
            {"t": self.source_topic, "p": partition, "w": self.window_seconds})
        count, version = rows[0]
        return int(version) if int(count) else -1

    def load_cells(self, partition: int, keys: Iterable[WindowKey]) -> dict[WindowKey, tuple[FeedbackAgg, int]]:
        """The stored state and version of ``keys`` for ``partition`` (keys never written are absent)."""
        wanted = set(keys)
        if not wanted:
            return {}
        starts = sorted({k[2] // 1000 for k in wanted})
        rows = self.ch.query(
            "SELECT dimension, dimension_value, toUInt32(window_start), rated, satisfied, scored, score_micros, "
            f"version FROM {self.db}.feedback_window_partials FINAL "
            "WHERE source_topic = %(t)s AND source_partition = %(p)s AND window_seconds = %(w)s "
            "AND toUInt32(window_start) IN %(starts)s",
            {"t": self.source_topic, "p": partition, "w": self.window_seconds, "starts": tuple(starts)})
        found: dict[WindowKey, tuple[FeedbackAgg, int]] = {}
        for dimension, value, start, rated, satisfied, scored, score_micros, version in rows:
            key = (dimension, value, int(start) * 1000)
            if key in wanted:
                agg = FeedbackAgg(int(rated), int(satisfied), int(scored), int(score_micros))
                found[key] = (agg, int(version))
        return found

    def totals(self, keys: Iterable[WindowKey]) -> dict[WindowKey, FeedbackAgg]:
        """Stored state of ``keys`` summed over every source partition (all workers' contributions)."""
        wanted = set(keys)
        if not wanted:
            return {}
        rows = self.ch.query(
            "SELECT dimension, dimension_value, toUInt32(window_start) AS ws, sum(rated), sum(satisfied), "
            f"sum(scored), sum(score_micros) FROM {self.db}.feedback_window_partials FINAL "
            "WHERE source_topic = %(t)s AND window_seconds = %(w)s AND toUInt32(window_start) IN %(starts)s "
            "AND dimension IN %(dims)s GROUP BY dimension, dimension_value, ws",
            {"t": self.source_topic, "w": self.window_seconds, "starts": tuple({k[2] // 1000 for k in wanted}),
             "dims": tuple({k[0] for k in wanted})})
        found: dict[WindowKey, FeedbackAgg] = {}
        for dimension, value, start, rated, satisfied, scored, score_micros in rows:
            key = (dimension, value, int(start) * 1000)
            if key in wanted:
                found[key] = FeedbackAgg(int(rated), int(satisfied), int(scored), int(score_micros))
        return found

    def write(self, cells: Sequence[CellRow], events: Sequence[tuple[int, int, Mapping[str, Any]]]) -> None:
        """Persist clean events (partition, offset, record) and then window cells. Blocks; raises
        ClickHouseError. Idempotent for the same input."""
        if events:
            self.ch.insert(f"{self.db}.feedback_events", EVENT_COLUMNS,
                           [_event_row(p, o, r) for p, o, r in events])
        if cells:
            now = int(time.time())
            self.ch.insert(f"{self.db}.feedback_window_partials", PARTIAL_COLUMNS, [
                (c.key[0], c.key[1], self.window_seconds, c.key[2] // 1000, self.source_topic, c.partition,
                 c.agg.rated, c.agg.satisfied, c.agg.scored, c.agg.score_micros, c.version, now)
                for c in cells])
