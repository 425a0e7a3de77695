"""The window stage between the Faust agent and the store: load state, count, persist, finalise.

Blocking (ClickHouse I/O): the agent runs every call on one dedicated thread, one call at a time.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from satpulse import metrics
from sinks.clickhouse import ClickHouseError
from sinks.window_store import WindowStore
from streams.windows import FeedbackAgg, Windower, WindowKey

log = logging.getLogger(__name__)
T = TypeVar("T")

# (source partition, offset, clean feedback record)
Item = tuple[int, int, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class FinalWindow:
    key: WindowKey
    agg: FeedbackAgg


class WindowWorker:
    """Owns the :class:`Windower` and the :class:`WindowStore` of one worker process."""

    def __init__(self, windower: Windower, store: WindowStore, retry_max_seconds: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.windower = windower
        self.store = store
        self.retry_max_seconds = retry_max_seconds
        self._sleep = sleep
        self._stopping = False
        self._late_reported = 0
        self._gauge_window: dict[tuple[str, str], int] = {}  # window start shown by the gauges

    def stop(self) -> None:
        """Make a retry loop give up (raises ClickHouseError out of :meth:`process`)."""
        self._stopping = True

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        delay = 0.2
        while True:
            try:
                return call()
            except ClickHouseError as exc:
                metrics.SINK_ERRORS.labels("clickhouse").inc()
                if self._stopping:
                    raise
                log.warning("ClickHouse %s failed, retrying in %.1fs: %s", what, delay, exc)
                self._sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)

    def _prepare(self, partition: int, items: Sequence[Item]) -> None:
        w = self.windower
        if not w.is_loaded(partition):
            w.load_partition(partition, self._retry("read", lambda: self.store.persisted_offset(partition)))
        pairs = [(offset, record) for _, offset, record in items]
        missing = w.missing_cells(partition, pairs)
        if not missing:
            return
        stored = self._retry("read", lambda: self.store.load_cells(partition, missing))
        if any(version > w.partitions[partition].persisted_offset for _, version in stored.values()):
            # another worker wrote this partition after we read its high-water mark (rebalance): start over
            w.drop_partition(partition)
            self._prepare(partition, items)
            return
        w.load_cells(partition, missing, {k: agg for k, (agg, _) in stored.items()})

    def process(self, items: Sequence[Item], now: float) -> None:
        """Count a batch and persist it. Returns only once ClickHouse holds it (retrying with back-off while
        it is down: the caller is blocked, which is the back-pressure); then the offsets may be acked."""
        self.windower.wake(now)
        by_partition: dict[int, list[Item]] = defaultdict(list)
        for item in items:
            by_partition[item[0]].append(item)
        added: list[Item] = []
        for partition, part_items in by_partition.items():
            self._prepare(partition, part_items)
            for item in part_items:
                if self.windower.add(partition, item[1], item[2], now):
                    added.append(item)
                else:
                    metrics.REPLAY_SKIPPED.inc()
        rows = self.windower.dirty_rows()
        started = time.perf_counter()
        self._retry("write", lambda: self.store.write(rows, added))
        metrics.SINK_FLUSH_SECONDS.labels("clickhouse").observe(time.perf_counter() - started)
        metrics.SINK_BATCH_ROWS.labels("clickhouse").observe(len(rows) + len(added))
        self.windower.mark_persisted(rows)
        for _, _, record in added:
            if record.get("satisfied") is not None:
                metrics.FEEDBACK_RATED.labels(record["channel"]).inc()
                if record["satisfied"]:
                    metrics.FEEDBACK_SATISFIED.labels(record["channel"]).inc()

    def tick(self, now: float) -> list[FinalWindow]:
        """Advance the watermark; returns the windows that became final or were corrected since the last
        tick, with totals read from the store (every worker's partitions), and updates the gauges."""
        keys = self.windower.finalise(now)
        metrics.LATE_EVENTS.inc(self.windower.late_events - self._late_reported)
        self._late_reported = self.windower.late_events
        watermark = self.windower.watermark(now)
        if watermark >= 0:
            metrics.WATERMARK_DELAY.set(max(0.0, time.time() - watermark / 1000))
        totals = self._retry("read", lambda: self.store.totals(keys)) if keys else {}
        window = f"{self.windower.window_ms // 1000}s"
        for (dimension, value, start), agg in sorted(totals.items(), key=lambda kv: kv[0][2]):
            if start < self._gauge_window.get((dimension, value), -1):
                continue  # a correction of an older window: the gauges show the latest one
            self._gauge_window[(dimension, value)] = start
            metrics.WINDOW_RATED.labels(dimension, value, window).set(agg.rated)
            if agg.csat_percent is not None:  # undefined CSAT is left out, never exported as 0 or NaN
                metrics.WINDOW_CSAT.labels(dimension, value, window).set(agg.csat_percent)
        return [FinalWindow(k, a) for k, a in sorted(totals.items(), key=lambda kv: kv[0][2])]
