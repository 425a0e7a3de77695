"""Stored roll-ups of window cells (1 h and 1 day by default), refreshed by the stream at most every
``rollup_interval_seconds`` (settings; 0: after every write) and when the worker stops.

A roll-up row has the shape and key of a window cell: the full state of one coarser cell as contributed by one
source (topic, partition). It is computed inside ClickHouse from the next finer level of the same source
(``INSERT INTO window_cells SELECT ... FROM window_cells FINAL ... GROUP BY``), with version = the highest
version among its inputs. Every finer row is a full state versioned by source offset, and a source's offsets
are written in order, so a roll-up row is determined by its inputs and its version grows whenever they change:
recomputing is idempotent, a retry or a replay cannot count twice, and ReplacingMergeTree keeps the newest.

A period's roll-up rows are written by one statement (one block, hence atomic), so they all carry the newest
version among the period's finer rows at that time: a period whose finer rows hold a newer version than its
roll-up rows (or that has none) is stale. That is how a restarted store finds what a crash between the cell
insert and the roll-up (or a partly written level) left behind, and how it rolls up the history when roll-ups
are switched on. The checkpoint row of each source (``domain.windows.CHECKPOINT_KEY``) is rolled up like a cell.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from domain.windows import Source
from sinks.clickhouse import ClickHouse, ClickHouseError
from sinks.declared_columns import CELLS

# the coarser period of a cell start, in epoch seconds (UTC days, as the query-time roll-ups compute it)
_PERIOD = "intDiv(toUInt32(window_start), %(size)s) * %(size)s"
# merged aggregates, aliased in the inner query (one per field) and unpacked into their columns in the outer one
_ALIASES = tuple(f"agg{i}" for i in range(len(CELLS.merged_exprs)))
_INNER = ", ".join(f"{expr} AS {alias}" for expr, alias in zip(CELLS.merged_exprs, _ALIASES, strict=True))
_OUTER = CELLS.unpacked(_ALIASES)
_ROLLUP_SQL = (
    "INSERT INTO {db}.window_cells (" + ", ".join(CELLS.columns) + ") "
    "SELECT dimension, dimension_value, toUInt32(%(size)s), toDateTime(period), source_topic, source_partition, "
    f"{_OUTER}, top_version, toDateTime(%(now)s) FROM ("
    f"SELECT dimension, dimension_value, {_PERIOD} AS period, source_topic, source_partition, {_INNER}, "
    "max(version) AS top_version FROM {db}.window_cells FINAL "
    # the window_start range lets ClickHouse skip granules by primary key: without it every roll-up reads the
    # whole table, and a batch's roll-up cost grows with the table (25 -> 62 ms after 25 h of cells in a test)
    "WHERE window_seconds = %(finer)s AND window_start >= toDateTime(%(lo)s) AND window_start < toDateTime(%(hi)s) "
    f"AND (source_topic, source_partition, {_PERIOD}) IN %(keys)s "
    "GROUP BY dimension, dimension_value, period, source_topic, source_partition)")
# (topic, partition, period start in epoch seconds) of one roll-up cell group
RollupKey = tuple[str, int, int]
# periods per INSERT ... SELECT, so that a long backfill stays below ClickHouse's max_query_size (256 KiB)
MAX_KEYS_PER_STATEMENT = 500


def rollup_sizes(base_seconds: int, sizes: Iterable[int]) -> tuple[int, ...]:
    """``sizes`` checked: ascending, each a multiple of the previous one and of ``base_seconds``. Raises
    ValueError otherwise."""
    checked, finer = tuple(sizes), base_seconds
    for size in checked:
        if size <= finer or size % finer:
            raise ValueError(f"roll-up {size}s must be a larger multiple of {finer}s (window or previous roll-up)")
        finer = size
    return checked


class Rollups:
    """Keeps the stored roll-ups of window cells of ``base_seconds`` current. Not thread-safe (one per store)."""

    def __init__(self, ch: ClickHouse, base_seconds: int, sizes: Sequence[int]) -> None:
        self.ch = ch
        self.base_seconds = base_seconds
        self.sizes = rollup_sizes(base_seconds, sizes)
        self._current: set[Source] = set()  # sources whose roll-ups were found complete by this instance

    def refresh(self, touched: Mapping[Source, Iterable[int]], sources: Iterable[Source] = ()) -> None:
        """Recompute, level by level, each source's roll-up rows that cover its ``touched`` cell starts
        (epoch seconds of cells of ``base_seconds`` just written). For a source of ``touched`` or ``sources``
        met for the first time by this instance, or after a failed call, also every roll-up row whose inputs
        changed after it was computed (a crash between cell insert and roll-up; roll-ups newly enabled).
        Call after the cells are stored. Blocks; raises ClickHouseError (nothing is lost: a retry with the
        same arguments, or any later call for the source, repairs it). Idempotent."""
        if not self.sizes:
            return
        starts = {source: set(values) for source, values in touched.items()}
        unchecked = (set(starts) | set(sources)) - self._current
        now = int(time.time())
        try:
            finer = self.base_seconds
            for size in self.sizes:
                keys = {(t, p, start // size * size) for (t, p), values in starts.items() for start in values}
                for source in sorted(unchecked):
                    keys |= self._stale(source, finer, size)
                ordered = sorted(keys)  # in bounded statements (max_query_size), each period whole in one
                for i in range(0, len(ordered), MAX_KEYS_PER_STATEMENT):
                    chunk = ordered[i:i + MAX_KEYS_PER_STATEMENT]
                    periods = [key[2] for key in chunk]
                    self.ch.execute(_ROLLUP_SQL.format(db=self.ch.database),
                                    {"size": size, "finer": finer, "now": now, "keys": tuple(chunk),
                                     "lo": min(periods), "hi": max(periods) + size})
                finer = size
        except ClickHouseError:
            self._current -= set(starts) | unchecked
            raise
        self._current |= unchecked

    def recheck(self, source: Source) -> None:
        """Look for stale periods of ``source`` again at its next :meth:`refresh` (no I/O)."""
        self._current.discard(source)

    def _stale(self, source: Source, finer: int, size: int) -> set[RollupKey]:
        """Periods of ``size`` whose rows of ``finer`` (this source) hold a newer version than the period's
        roll-up rows, or that have no roll-up rows. Reads every row of the source at both levels."""
        sql = (f"SELECT {_PERIOD} AS period, max(version) FROM {self.ch.database}.window_cells "
               "WHERE window_seconds = %(w)s AND source_topic = %(t)s AND source_partition = %(p)s GROUP BY period")
        params = {"t": source[0], "p": source[1], "size": size}
        rolled = {int(period): int(top) for period, top in self.ch.query(sql, {**params, "w": size})}
        return {(source[0], source[1], int(period)) for period, top in self.ch.query(sql, {**params, "w": finer})
                if int(top) > rolled.get(int(period), -1)}
