"""Event-time tumbling windows over clean feedback, with mergeable aggregates and our own watermark.

Pure state, no I/O: the agent feeds records in, asks for dirty rows to persist, and marks them persisted.
State is kept per source partition so that each partition's contribution is one idempotent row per window
(``version`` = highest source offset included): replaying a partition after a crash re-derives the same rows,
and offsets at or below a partition's persisted high-water mark are skipped, so nothing counts twice.
Faust's wall-clock window expiry and ``on_window_close`` are not used (faust-streaming#250, #193).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SCORE_SCALE = 1_000_000  # scores are summed as integer micro-points so that sums are exact in any order
UNKNOWN = "unknown"  # dimension value for a record that lacks it


@dataclass(slots=True)
class FeedbackAgg:
    """Mergeable counts of one window cell. Merge is associative and commutative."""

    rated: int = 0
    satisfied: int = 0
    scored: int = 0
    score_micros: int = 0

    def add_record(self, record: Mapping[str, Any]) -> None:
        """Count one clean feedback record; records without a rating are ignored."""
        if record.get("satisfied") is None:
            return
        self.rated += 1
        self.satisfied += int(bool(record["satisfied"]))
        if record.get("score") is not None:
            self.scored += 1
            self.score_micros += round(record["score"] * SCORE_SCALE)

    def merge(self, other: FeedbackAgg) -> None:
        self.rated += other.rated
        self.satisfied += other.satisfied
        self.scored += other.scored
        self.score_micros += other.score_micros

    @property
    def csat_percent(self) -> float | None:
        """100 x satisfied / rated; None (not 0, not NaN) when nothing was rated."""
        return 100.0 * self.satisfied / self.rated if self.rated else None

    @property
    def average_score(self) -> float | None:
        return self.score_micros / SCORE_SCALE / self.scored if self.scored else None


# (dimension, dimension value, window start in epoch ms)
WindowKey = tuple[str, str, int]


def window_start(event_time_ms: int, window_ms: int) -> int:
    """Start of the tumbling window holding ``event_time_ms`` (windows are [start, start + size))."""
    return event_time_ms - event_time_ms % window_ms


def window_keys(record: Mapping[str, Any], dimensions: Iterable[str], window_ms: int) -> list[WindowKey]:
    """The cells a clean feedback record counts in: one per configured dimension."""
    start = window_start(record["event_time"], window_ms)
    keys = []
    for dimension in dimensions:
        value = "all" if dimension == "all" else (record.get(dimension) or UNKNOWN)
        keys.append((dimension, str(value), start))
    return keys


def aggregate(records: Iterable[Mapping[str, Any]], dimensions: Iterable[str], window_ms: int
              ) -> dict[WindowKey, FeedbackAgg]:
    """Batch computation of every window cell (the reference the streaming state must equal)."""
    dims = tuple(dimensions)
    cells: dict[WindowKey, FeedbackAgg] = {}
    for record in records:
        if record.get("satisfied") is None:
            continue
        for key in window_keys(record, dims, window_ms):
            cells.setdefault(key, FeedbackAgg()).add_record(record)
    return cells


@dataclass(slots=True)
class PartitionState:
    """Window cells of one source partition. ``persisted_offset``: highest offset already in the store."""

    persisted_offset: int = -1
    max_offset: int = -1
    cells: dict[WindowKey, FeedbackAgg] = field(default_factory=dict)
    dirty: set[WindowKey] = field(default_factory=set)


@dataclass(slots=True)
class PartitionClock:
    """Event-time progress of one assigned source partition (-1: nothing seen yet)."""

    max_event_time: int
    last_arrival: float


@dataclass(frozen=True, slots=True)
class CellRow:
    """One row for the store: the full state of a cell for one source partition, versioned by offset."""

    partition: int
    key: WindowKey
    agg: FeedbackAgg
    version: int


class Windower:
    """Windows for the source partitions this worker owns.

    Contract: call :meth:`needs_cells` / :meth:`load` before :meth:`add` for cells that may exist in the
    store (restart, rebalance, eviction); :meth:`add` never blocks and never does I/O.
    """

    def __init__(self, dimensions: Iterable[str], window_seconds: int, grace_seconds: int,
                 idle_seconds: float) -> None:
        self.dimensions = tuple(dimensions)
        self.window_ms = window_seconds * 1000
        self.grace_ms = grace_seconds * 1000
        self.idle_seconds = idle_seconds
        self.partitions: dict[int, PartitionState] = {}
        self.clocks: dict[int, PartitionClock] = {}
        self._watermark = -1
        self._finalised_until = -1  # every window ending at or before this was emitted as final
        self._corrected: set[WindowKey] = set()  # final windows that late events changed since last finalise
        self.late_events = 0

    # --- assignment and loading ---
    def assign(self, partitions: Iterable[int], now: float) -> None:
        """Partitions this worker now owns: each holds the watermark back until it has data or is idle."""
        for partition in partitions:
            self.clocks.setdefault(partition, PartitionClock(-1, now))

    def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions taken away: forget their state (unpersisted events were not acked and are replayed)."""
        for partition in partitions:
            self.clocks.pop(partition, None)
            self.partitions.pop(partition, None)

    def wake(self, now: float) -> None:
        """Call when a batch arrives: if every partition was idle, each gets ``idle_seconds`` again to show
        its data before it stops holding the watermark back (a burst after a quiet spell is not late)."""
        if all(now - c.last_arrival >= self.idle_seconds for c in self.clocks.values()):
            for clock in self.clocks.values():
                clock.last_arrival = now

    # --- loading --------------------------------------------------------------------------------------
    def is_loaded(self, partition: int) -> bool:
        return partition in self.partitions

    def load_partition(self, partition: int, persisted_offset: int) -> None:
        """Start tracking a partition whose store high-water mark is ``persisted_offset`` (-1: none)."""
        self.partitions[partition] = PartitionState(persisted_offset=persisted_offset,
                                                    max_offset=persisted_offset)

    def drop_partition(self, partition: int) -> None:
        """Forget a partition's window state (not its clock), to be loaded again from the store."""
        self.partitions.pop(partition, None)

    def missing_cells(self, partition: int, records: Iterable[tuple[int, Mapping[str, Any]]]) -> set[WindowKey]:
        """Cells that the (offset, record) pairs touch but that are not in memory."""
        state = self.partitions[partition]
        missing: set[WindowKey] = set()
        for offset, record in records:
            if offset > state.persisted_offset and record.get("satisfied") is not None:
                missing.update(k for k in window_keys(record, self.dimensions, self.window_ms)
                               if k not in state.cells)
        return missing

    def load_cells(self, partition: int, keys: Iterable[WindowKey], stored: Mapping[WindowKey, FeedbackAgg]
                   ) -> None:
        """Install cells read from the store (absent ones start empty)."""
        cells = self.partitions[partition].cells
        for key in keys:
            cells[key] = stored.get(key) or FeedbackAgg()

    # --- processing -----------------------------------------------------------------------------------
    def add(self, partition: int, offset: int, record: Mapping[str, Any], now: float) -> bool:
        """Count one clean record. Returns False when the offset is already in the store (replay)."""
        state = self.partitions[partition]
        clock = self.clocks.setdefault(partition, PartitionClock(-1, now))
        clock.last_arrival = now
        clock.max_event_time = max(clock.max_event_time, record["event_time"])
        if offset <= state.persisted_offset:
            return False
        state.max_offset = max(state.max_offset, offset)
        if record.get("satisfied") is None:
            return True
        keys = window_keys(record, self.dimensions, self.window_ms)
        if keys[0][2] + self.window_ms <= self._finalised_until:
            self.late_events += 1  # still applied: the store takes it, and the window is emitted again
            self._corrected.update(keys)
        for key in keys:
            state.cells[key].add_record(record)
            state.dirty.add(key)
        return True

    def dirty_rows(self) -> list[CellRow]:
        """Rows to persist: every dirty cell, versioned with its partition's highest offset seen."""
        return [CellRow(p, k, s.cells[k], s.max_offset) for p, s in self.partitions.items() for k in s.dirty]

    def mark_persisted(self, rows: Iterable[CellRow]) -> None:
        """Record that ``rows`` are durably stored; call only after the store accepted them."""
        for row in rows:
            state = self.partitions.get(row.partition)
            if state is not None:
                state.dirty.discard(row.key)
                state.persisted_offset = max(state.persisted_offset, row.version)
        for state in self.partitions.values():
            if not state.dirty:
                state.persisted_offset = max(state.persisted_offset, state.max_offset)

    # --- watermark and final windows ------------------------------------------------------------------
    def watermark(self, now: float) -> int:
        """Event-time progress (ms), monotonic; ``now`` is wall-clock epoch seconds. Every assigned partition
        that is busy holds it back (one that has seen nothing yet holds it where it is); a partition idle for
        ``idle_seconds`` stops holding it back; when all are idle it is the wall clock (nothing more is
        coming, so every window up to now may close) or, for data stamped ahead of the clock, the newest
        event time plus the idle time."""
        clocks = list(self.clocks.values())
        busy = [c.max_event_time for c in clocks if now - c.last_arrival < self.idle_seconds]
        seen = [c for c in clocks if c.max_event_time >= 0]
        if busy:
            candidate = min(busy)
        elif seen:
            candidate = max(int(now * 1000),
                            *(c.max_event_time + int((now - c.last_arrival) * 1000) for c in seen))
        else:
            candidate = -1
        self._watermark = max(self._watermark, candidate)
        return self._watermark

    def finalise(self, now: float) -> set[WindowKey]:
        """Windows that became final (end + grace <= watermark) since the last call, plus final windows
        that late events corrected since; evicts final, persisted cells from memory. Call only after the
        rows of every processed batch were persisted, so that the store holds what is returned."""
        closed_until = self.watermark(now) - self.grace_ms
        final = self._corrected
        self._corrected = set()
        for state in self.partitions.values():
            for key in list(state.cells):
                end = key[2] + self.window_ms
                if end <= closed_until:
                    if end > self._finalised_until:
                        final.add(key)
                    if key not in state.dirty:
                        del state.cells[key]
        self._finalised_until = max(self._finalised_until, closed_until)
        return final
