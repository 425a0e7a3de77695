"""Reads and writes of window cells and clean events in ClickHouse (blocking; run off the event loop).

Write contract: :meth:`WindowStore.write` inserts the batch's clean events, then its window cells, each as
one block; when it returns, both are durable and the caller may acknowledge the source offsets. It raises
ClickHouseError on failure and may be retried with the same batch: rows replace themselves (same key, same
version), so a retry or a replay after a crash never counts twice. Events are written before cells, so the
events of every offset a cell includes are in the store (entities are rebuilt from them after a restart); the
events a crash between the two inserts leaves after the high-water mark are deleted by the next owner
(:meth:`WindowStore.discard_uncounted_events`).
The stored roll-ups (1 h, 1 day; :mod:`sinks.rollups`) of the touched cells are refreshed at most every
``rollup_interval_seconds`` by :meth:`write` or :meth:`refresh_rollups` (call it periodically); roll-ups left
behind by a crash are found stale and recomputed at the next start.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from domain.aggregates import WindowAgg
from domain.entities import DIMENSION_FIELDS, RatingState, WindowKey, newer_rating
from domain.store import StoredEvent
from domain.windows import CellRow, Source
from sinks.clickhouse import ClickHouse, ClickHouseError
from sinks.declared_columns import CELLS
from sinks.mutations import delete_rows, matching_rows, wait_for_mutations
from sinks.rollups import Rollups

MUTATION_WAIT_SECONDS = 60.0  # how long discard_uncounted_events waits for its mutation before raising
# feedback_events columns taken as they are from a clean record: column -> record field
_FEEDBACK_FIELDS = {
    "rating_id": "rating_id", "rating_version": "rating_version", "event_id": "event_id",
    "event_time_ms": "event_time", "ingest_time_ms": "ingest_time", "ticket_id": "ticket_id",
    "customer_id": "customer_id", "native_value": "native_value", "native_scale": "native_scale", "score": "score",
    "comment": "comment", **{name: name for name in DIMENSION_FIELDS}}
_feedback_fields = itemgetter(*_FEEDBACK_FIELDS.values())  # one C call per event for all of them
_FEEDBACK_V2_FIELDS = ("sentiment", "sentiment_label", "sentiment_model", "survey_id")  # None in older records
FEEDBACK_COLUMNS = (*_FEEDBACK_FIELDS, *_FEEDBACK_V2_FIELDS, "event_time", "satisfied", "source_partition",
                    "source_offset", "secondary_question_ids", "secondary_native_values", "secondary_native_scales",
                    "secondary_scores", "secondary_satisfied")
# ticket_events columns taken as they are from a clean record: column -> record field
_TICKET_FIELDS = {
    "ticket_id": "ticket_id", "event_id": "event_id", "status": "status", "event_time_ms": "event_time",
    "ingest_time_ms": "ingest_time", "priority": "priority", "customer_id": "customer_id",
    **{name: name for name in DIMENSION_FIELDS}}
_ticket_fields = itemgetter(*_TICKET_FIELDS.values())
TICKET_COLUMNS = (*_TICKET_FIELDS, "event_time", "source_partition", "source_offset")
# what rebuilding ratings and cases reads back of their events, by column name
_RATING_COLUMNS = ("rating_id", "rating_version", "event_id", "event_time_ms", *DIMENSION_FIELDS, "satisfied",
                   "score")
_TICKET_EVENT_COLUMNS = ("ticket_id", "event_id", "status", "event_time_ms", "priority", *DIMENSION_FIELDS)
# bytes of ids per IN list (quoted and escaped they grow a little; ClickHouse's max_query_size is 256 KiB)
_MAX_IDS_BYTES = 100_000
# (partition, offset, clean record)


def _feedback_row(partition: int, offset: int, r: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values of FEEDBACK_COLUMNS for a clean feedback record."""
    satisfied = r["satisfied"]
    return (*_feedback_fields(r), *(r.get(name) for name in _FEEDBACK_V2_FIELDS), r["event_time"] // 1000,
            None if satisfied is None else int(satisfied), partition, offset,
            *_secondary_columns(r.get("secondary_answers") or ()))


def _secondary_columns(answers: Sequence[Mapping[str, Any]]) -> tuple[list[Any], ...]:
    """The parallel arrays of feedback_events.secondary_*: ids, native values, scales, scores, satisfied."""
    if not answers:  # most feedback answers the CSAT question only
        return [], [], [], [], []
    return ([a["question_id"] for a in answers], [a["native_value"] for a in answers],
            [a["native_scale"] for a in answers], [a["score"] for a in answers],
            [None if a["satisfied"] is None else int(a["satisfied"]) for a in answers])


def _ticket_row(partition: int, offset: int, r: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values of TICKET_COLUMNS for a clean ticket event."""
    return (*_ticket_fields(r), r["event_time"] // 1000, partition, offset)


class WindowStore:
    """Window cells of one window size, and the clean events they were computed from."""

    def __init__(self, ch: ClickHouse, feedback_topic: str, tickets_topic: str, window_seconds: int,
                 rollup_seconds: Sequence[int] = (), rollup_interval_seconds: float = 0.0) -> None:
        """``rollup_seconds``: sizes of the stored roll-ups (settings ``rollup_window_seconds``; empty: none),
        refreshed at most every ``rollup_interval_seconds`` (0: with every write). Raises ValueError for sizes
        that do not nest."""
        self.ch = ch
        self.db = ch.database
        self.feedback_topic = feedback_topic
        self.tickets_topic = tickets_topic
        self.window_seconds = window_seconds
        self.rollups = Rollups(ch, window_seconds, rollup_seconds)
        self.rollup_interval_seconds = rollup_interval_seconds
        self._rollups_due: dict[Source, set[int]] = {}  # cell starts (s) written since the last refresh
        self._rollup_sources: set[Source] = set()
        self._rollups_at = float("-inf")

    def persisted_offset(self, source: Source) -> int:
        """Highest offset of ``source`` already contained in stored window cells (-1: none). Read when a worker
        (re)takes a source, so the source's roll-ups are checked for stale periods again at its next write
        (another worker may have written it meanwhile) at the next :meth:`refresh_rollups`, written or not."""
        self.recheck_rollups([source])
        rows = self.ch.query(
            f"SELECT count(), max(version) FROM {self.db}.window_cells "
            "WHERE source_topic = %(t)s AND source_partition = %(p)s AND window_seconds = %(w)s",
            {"t": source[0], "p": source[1], "w": self.window_seconds})
        count, version = rows[0]
        return int(version) if int(count) else -1

    def discard_uncounted_events(self, source: Source, persisted_offset: int) -> None:
        """Delete ``source``'s clean events after ``persisted_offset`` (see the protocol): counts them first and
        submits a mutation only when some exist (after a crash), then waits for it. Blocks; raises
        ClickHouseError, also when the mutation is not done within :data:`MUTATION_WAIT_SECONDS` (retry)."""
        table = "feedback_events" if source[0] == self.feedback_topic else "ticket_events"
        condition = "source_partition = %(p)s AND source_offset > %(o)s"
        params = {"p": source[1], "o": persisted_offset}
        if not matching_rows(self.ch, table, condition, params):
            return
        delete_rows(self.ch, table, condition, params)
        if not wait_for_mutations(self.ch, MUTATION_WAIT_SECONDS, table=table):
            raise ClickHouseError(f"{table}: the deletion of uncounted events is not done yet")

    def stored_window_starts(self, source: Source) -> set[int]:
        """Starts (epoch ms) of the windows in which ``source`` has stored cells."""
        rows = self.ch.query(
            f"SELECT DISTINCT toUInt32(window_start) FROM {self.db}.window_cells "
            "WHERE source_topic = %(t)s AND source_partition = %(p)s AND window_seconds = %(w)s",
            {"t": source[0], "p": source[1], "w": self.window_seconds})
        return {int(row[0]) * 1000 for row in rows}

    def _select_cells(self, select: str, where: str, params: Mapping[str, Any], wanted: set[WindowKey],
                      group_by: str = "") -> Iterator[tuple[WindowKey, Sequence[Any]]]:
        """(key, the ``select`` columns) of the rows of ``window_cells FINAL`` in the windows of ``wanted`` that
        match ``where``, for the wanted keys only."""
        rows = self.ch.query(
            f"SELECT dimension, dimension_value, toUInt32(window_start) AS ws, {select} "
            f"FROM {self.db}.window_cells FINAL WHERE window_seconds = %(w)s AND ws IN %(starts)s AND {where}"
            f"{group_by}", {**params, "w": self.window_seconds, "starts": tuple({k[2] // 1000 for k in wanted})})
        for row in rows:
            key = (row[0], row[1], int(row[2]) * 1000)
            if key in wanted:
                yield key, row[3:]

    def load_cells(self, source: Source, keys: Iterable[WindowKey]) -> dict[WindowKey, tuple[WindowAgg, int]]:
        """Stored state and version of ``keys`` for ``source`` (keys never written are absent)."""
        wanted = set(keys)
        if not wanted:
            return {}
        rows = self._select_cells(f"{CELLS.single_sql}, version", "source_topic = %(t)s AND source_partition = %(p)s",
                                  {"t": source[0], "p": source[1]}, wanted)
        return {key: (CELLS.decode(values[:-1]), int(values[-1])) for key, values in rows}

    def totals(self, keys: Iterable[WindowKey]) -> dict[WindowKey, WindowAgg]:
        """Stored state of ``keys`` summed over every source (all workers' contributions)."""
        wanted = set(keys)
        if not wanted:
            return {}
        rows = self._select_cells(CELLS.merged_sql, "source_topic IN %(topics)s AND dimension IN %(dims)s",
                                  {"topics": (self.feedback_topic, self.tickets_topic),
                                   "dims": tuple({k[0] for k in wanted})}, wanted,
                                  " GROUP BY dimension, dimension_value, ws")
        return {key: CELLS.decode(values) for key, values in rows}

    def rolling_totals(self, now: int, periods: Mapping[str, int], dimensions: Sequence[str]
                       ) -> dict[tuple[str, str, str], tuple[int, int]]:
        """(dimension, value, period) -> (rated, satisfied) summed over every source's cells of the windows that
        started within ``periods[period]`` seconds before ``now`` (epoch s); only entries with rated > 0."""
        names = list(periods)
        sums = ", ".join(f"sumIf(rated, ws >= %(since{i})s), sumIf(satisfied, ws >= %(since{i})s)"
                         for i in range(len(names)))
        params: dict[str, Any] = {f"since{i}": now - periods[name] for i, name in enumerate(names)}
        rows = self.ch.query(
            f"SELECT dimension, dimension_value, {sums} FROM (SELECT dimension, dimension_value, "
            f"toUInt32(window_start) AS ws, rated, satisfied FROM {self.db}.window_cells FINAL "
            "WHERE window_seconds = %(w)s AND source_topic IN %(topics)s AND dimension IN %(dims)s "
            "AND window_start >= toDateTime(%(oldest)s)) GROUP BY dimension, dimension_value",
            {**params, "w": self.window_seconds, "topics": (self.feedback_topic, self.tickets_topic),
             "dims": tuple(dimensions), "oldest": now - max(periods.values())})
        found = {}
        for row in rows:
            for i, name in enumerate(names):
                rated, satisfied = int(row[2 + 2 * i]), int(row[3 + 2 * i])
                if rated:
                    found[(row[0], row[1], name)] = (rated, satisfied)
        return found

    def _query_by_ids(self, sql: str, ids: Sequence[str], params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """``sql`` with ``%(ids)s`` run once per slice of ``ids`` small enough for ClickHouse's max_query_size
        (256 KiB: a batch of 20,000 ids in one IN list is refused, and the refusal would be retried forever)."""
        rows: list[tuple[Any, ...]] = []
        chunk: list[str] = []
        size = 0
        for i, entity_id in enumerate(ids):
            chunk.append(entity_id)
            size += len(entity_id.encode()) + 4
            if size > _MAX_IDS_BYTES or i == len(ids) - 1:
                rows += self.ch.query(sql, {**params, "ids": tuple(chunk)})
                chunk, size = [], 0
        return rows

    def load_ratings(self, source: Source, ids: Iterable[str], max_offset: int) -> dict[str, RatingState]:
        """Latest version of each rating among the source's events up to ``max_offset``."""
        wanted = tuple(set(ids))
        if not wanted or max_offset < 0:
            return {}
        rows = self._query_by_ids(
            f"SELECT {', '.join(_RATING_COLUMNS)} FROM {self.db}.feedback_events "
            "WHERE rating_id IN %(ids)s AND source_partition = %(p)s AND source_offset <= %(o)s",
            wanted, {"p": source[1], "o": max_offset})
        found: dict[str, RatingState] = {}
        for row in rows:
            r = dict(zip(_RATING_COLUMNS, row, strict=True))
            state = RatingState(int(r["rating_version"]), r["event_id"], int(r["event_time_ms"]),
                                tuple((name, r[name]) for name in DIMENSION_FIELDS),
                                None if r["satisfied"] is None else bool(r["satisfied"]), r["score"])
            found[r["rating_id"]] = newer_rating(found.get(r["rating_id"]), state)
        return found

    def load_ticket_events(self, source: Source, ids: Iterable[str], max_offset: int
                           ) -> dict[str, list[dict[str, Any]]]:
        """Every stored lifecycle event of each case among the source's events up to ``max_offset``."""
        wanted = tuple(set(ids))
        if not wanted or max_offset < 0:
            return {}
        rows = self._query_by_ids(
            f"SELECT {', '.join(_TICKET_EVENT_COLUMNS)} FROM {self.db}.ticket_events "
            "WHERE ticket_id IN %(ids)s AND source_partition = %(p)s AND source_offset <= %(o)s",
            wanted, {"p": source[1], "o": max_offset})
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            record = dict(zip(_TICKET_EVENT_COLUMNS, row, strict=True))
            record["event_time"] = int(record.pop("event_time_ms"))
            found.setdefault(record["ticket_id"], []).append(record)
        return found

    def write(self, cells: Sequence[CellRow], feedback: Sequence[StoredEvent], tickets: Sequence[StoredEvent]
              ) -> None:
        """Persist clean events (partition, offset, record), then window cells, then refresh the roll-ups of
        the touched cells (and, once per source, any left stale by a crash). Blocks; raises ClickHouseError.
        Idempotent for the same input."""
        if feedback:
            self.ch.insert(f"{self.db}.feedback_events", FEEDBACK_COLUMNS, [_feedback_row(*e) for e in feedback])
        if tickets:
            self.ch.insert(f"{self.db}.ticket_events", TICKET_COLUMNS, [_ticket_row(*e) for e in tickets])
        if cells:
            now = int(time.time())
            self.ch.insert(f"{self.db}.window_cells", CELLS.columns,
                           [CELLS.row(c, self.window_seconds, now) for c in cells])
        if self.rollups.sizes:
            for c in cells:
                self._rollups_due.setdefault(c.source, set()).add(c.key[2] // 1000)
            self._rollup_sources |= ({(self.feedback_topic, p) for p, _, _ in feedback}
                                     | {(self.tickets_topic, p) for p, _, _ in tickets})
            self.refresh_rollups()

    def recheck_rollups(self, sources: Iterable[Source]) -> None:
        """Check these sources' roll-ups for stale periods at the next :meth:`refresh_rollups` (call when a
        worker starts or takes them: a worker may have died before refreshing them; any worker may repair them,
        since a roll-up row is versioned by its inputs). No I/O."""
        for source in sources:
            self.rollups.recheck(source)
            if self.rollups.sizes:
                self._rollup_sources.add(source)

    def refresh_rollups(self, force: bool = False) -> None:
        """Recompute the roll-ups of the cells written since the last refresh, if ``rollup_interval_seconds``
        passed since then (or ``force``). Blocks; raises ClickHouseError and keeps what is due for a retry."""
        now = time.monotonic()
        if not (self._rollups_due or self._rollup_sources) or (
                not force and now - self._rollups_at < self.rollup_interval_seconds):
            return
        self.rollups.refresh(self._rollups_due, self._rollup_sources)
        self._rollups_due, self._rollup_sources, self._rollups_at = {}, set(), now
