"""Where the window stage keeps its state: the contract the domain declares and a sink implements
(sinks/window_store.py on ClickHouse; tests/fakes.py in memory).

The state is versioned by source offset, which is what makes a replay exact:

- window cells, one row per (source, cell key) and version, the source offset the row includes; the latest
  version of a (source, key) wins, so a row written again (retry, replay) replaces itself. A source writes a
  checkpoint row (domain.windows.CHECKPOINT_KEY) with every batch, so its highest version is its high-water
  mark: every offset at or below it is counted.
- the clean events the cells were computed from, with their source partition and offset, from which ratings
  and cases are rebuilt when a worker takes a source over. The events are stored before the cells, so a crash
  between the two leaves events after the high-water mark that no cell counts: the next owner discards them.

Every method blocks (I/O) and may raise the sink's error (ClickHouseError); the caller retries. Not
thread-safe: one call at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from domain.aggregates import WindowAgg
from domain.entities import RatingState, WindowKey
from domain.windows import CellRow, Source

StoredEvent = tuple[int, int, Mapping[str, Any]]  # (source partition, source offset, clean record)


class WindowStateStore(Protocol):
    """Window cells of one window size and the clean events they were computed from."""

    def persisted_offset(self, source: Source) -> int:
        """Highest version of ``source``'s cells: every offset up to it is counted (-1: none). Read when a
        worker (re)takes a source."""

    def discard_uncounted_events(self, source: Source, persisted_offset: int) -> None:
        """Delete ``source``'s clean events stored after ``persisted_offset`` (its high-water mark): an owner
        that died between storing a batch's events and writing its cells left them, and no cell counts them.
        Left in place, they would be read back as counted once the mark passed their offsets, which happens
        when a replay publishes the same events again at later offsets (combined stages). Call when taking a
        source over, before counting any of its events; returns once they are gone."""

    def stored_window_starts(self, source: Source) -> set[int]:
        """Starts (epoch ms) of the windows in which ``source`` has stored cells."""

    def load_cells(self, source: Source, keys: Iterable[WindowKey]) -> dict[WindowKey, tuple[WindowAgg, int]]:
        """Latest stored state and version of ``keys`` for ``source`` (keys never written are absent)."""

    def totals(self, keys: Iterable[WindowKey]) -> dict[WindowKey, WindowAgg]:
        """Latest state of ``keys`` summed over every source (every worker's contributions)."""

    def rolling_totals(self, now: int, periods: Mapping[str, int], dimensions: Sequence[str]
                       ) -> dict[tuple[str, str, str], tuple[int, int]]:
        """(dimension, value, period) -> (rated, satisfied) summed over every source's cells of the windows that
        started within ``periods[period]`` seconds before ``now`` (epoch s); only entries with rated > 0."""

    def load_ratings(self, source: Source, ids: Iterable[str], max_offset: int) -> dict[str, RatingState]:
        """Latest version of each rating among the events of ``source``'s partition up to ``max_offset``."""

    def load_ticket_events(self, source: Source, ids: Iterable[str], max_offset: int
                           ) -> dict[str, list[dict[str, Any]]]:
        """Every stored lifecycle event of each case among the events of ``source``'s partition up to
        ``max_offset``."""

    def write(self, cells: Sequence[CellRow], feedback: Sequence[StoredEvent], tickets: Sequence[StoredEvent]
              ) -> None:
        """Persist the clean events, then the cells; when it returns both are durable and the offsets they
        include may be committed. Idempotent: the same input written again changes nothing."""

    def recheck_rollups(self, sources: Iterable[Source]) -> None:
        """Check these sources' roll-ups for stale periods at the next refresh (a worker started, or took them
        over). No I/O."""

    def refresh_rollups(self, force: bool = False) -> None:
        """Bring the stored roll-ups up to date with the cells written, if due (or ``force``)."""
