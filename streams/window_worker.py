"""The window stage between the pipeline and the store: load state, fold entities, persist, finalise.

Blocking (ClickHouse I/O): the pipeline runs every call on one dedicated thread, one call at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from domain.aggregates import WindowAgg
from domain.entities import (
    UNKNOWN,
    CaseRules,
    CaseState,
    Contribution,
    WindowKey,
    apply_ticket_event,
    case_contribution,
    newer_rating,
    rating_contribution,
    rating_state,
)
from domain.store import WindowStateStore
from domain.windows import Change, Entity, Source, Windower, cell_deltas
from satpulse import metrics
from satpulse.metrics import STAGE_LABEL
from satpulse.stages import Stage
from sinks.retry import retry_clickhouse

log = logging.getLogger(__name__)
T = TypeVar("T")
# dimensions exported as Prometheus labels (bounded cardinality: agents, products, categories stay in ClickHouse)
GAUGE_DIMENSIONS = ("all", "channel", "team")
# rolling CSAT periods of satpulse_rolling_csat_percent: label -> seconds of event time
ROLLING_PERIODS = {"15m": 900, "1h": 3600, "24h": 86400}


class Item(NamedTuple):
    """One clean event from a source: ``kind`` is feedback or ticket."""

    topic: str
    partition: int
    offset: int
    kind: str
    record: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An event the window stage dead-letters: a lifecycle event whose duration is not counted (reason
    negative_duration or absurd_duration; the event itself is stored), or an event whose folding raised
    (processing_error; not stored, not counted)."""

    item: Item
    reason: str
    detail: str


@dataclass(slots=True)
class BatchResult:
    """What :meth:`WindowWorker.fold` made of a batch: the outputs to publish before :meth:`WindowWorker.persist`
    (late events, dead letters) and what the business metrics count once it is stored."""

    late: list[Item] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)  # dead letters, in batch order per source
    # new first-response and resolution samples: (kind, channel, priority, seconds)
    durations: list[tuple[str, str, str, float]] = field(default_factory=list)
    new: list[Item] = field(default_factory=list)  # events not already in the store (replays excluded)
    changed: list[Item] = field(default_factory=list)  # events that changed their rating or case (no repeats)
    failed: set[tuple[str, int, int]] = field(default_factory=set)  # positions of processing_error events

    def add(self, other: BatchResult) -> None:
        """Add another source's result to this one."""
        self.late += other.late
        self.quarantined += other.quarantined
        self.durations += other.durations
        self.new += other.new
        self.changed += other.changed
        self.failed |= other.failed


@dataclass(frozen=True, slots=True)
class WindowResult:
    key: WindowKey
    agg: WindowAgg
    is_final: bool


class WindowWorker:
    """Owns the :class:`Windower` and the window store of one worker process."""

    def __init__(self, windower: Windower, store: WindowStateStore, dimensions: Iterable[str], rules: CaseRules,
                 retry_max_seconds: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 rolling_interval_seconds: float = 15.0, max_entities_per_source: int = 50_000,
                 stopping: threading.Event | None = None) -> None:
        self.windower = windower
        self.store = store
        self.dimensions = tuple(dimensions)
        self.rules = rules
        self.retry_max_seconds = retry_max_seconds
        self.rolling_interval_seconds = rolling_interval_seconds  # how often results() refreshes the rolling gauges
        self.max_entities_per_source = max_entities_per_source  # ratings/cases kept in memory per partition
        self._sleep = sleep
        self._stopping = stopping  # once set, a call waiting for ClickHouse raises RetryStopped
        self._late_reported = 0
        self._gauge_window: dict[tuple[str, str], int] = {}  # window start shown by the gauges
        self._rolling_at = float("-inf")
        self._rolling_labels: set[tuple[str, str, str]] = set()

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        return retry_clickhouse(what, call, self.retry_max_seconds, self._sleep, self._stopping)

    # --- entities ---------------------------------------------------------------------------------------
    def _contribution(self, kind: str, state: Any) -> tuple[Contribution, frozenset[str]]:
        window_ms = self.windower.window_ms
        if kind == "feedback":
            return rating_contribution(state, self.dimensions, window_ms), frozenset()
        return case_contribution(state, self.dimensions, window_ms, self.rules)

    def _load_entities(self, source: Source, kind: str, ids: set[str]) -> None:
        w = self.windower
        missing = w.missing_entities(source, ids)
        if not missing:
            return
        hwm = w.sources[source].persisted_offset
        loaded: dict[str, Entity] = {}
        if kind == "feedback":
            for rid, rating in self._retry("read", lambda: self.store.load_ratings(source, missing, hwm)).items():
                loaded[rid] = Entity(rating, None, frozenset(), rating.event_time)
        else:
            events = self._retry("read", lambda: self.store.load_ticket_events(source, missing, hwm))
            for tid, records in events.items():
                case: CaseState | None = None
                for record in records:
                    case = apply_ticket_event(case, record)
                assert case is not None
                loaded[tid] = Entity(case, *self._contribution(kind, case), case.last_event_time)
        w.load_entities(source, loaded)

    def _prepare_source(self, source: Source) -> None:
        if not self.windower.has_source(source):
            offset = self._retry("read", lambda: self.store.persisted_offset(source))
            self._retry("write", lambda: self.store.discard_uncounted_events(source, offset))
            starts = self._retry("read", lambda: self.store.stored_window_starts(source)) if offset >= 0 else set()
            self.windower.ensure_source(source, offset, starts)

    def _load_cells(self, source: Source, keys: set[WindowKey]) -> bool:
        """Load missing cells; False when another worker wrote this source meanwhile (state dropped)."""
        w = self.windower
        missing = w.missing_cells(source, keys)
        if not missing:
            return True
        stored = self._retry("read", lambda: self.store.load_cells(source, missing))
        if any(version > w.sources[source].persisted_offset for _, version in stored.values()):
            w.drop_source(source)  # a rebalance let another worker write after we read the high-water mark
            return False
        w.load_cells(source, missing, {k: agg for k, (agg, _) in stored.items()})
        return True

    def _process_source(self, source: Source, items: Sequence[Item], now: float, result: BatchResult) -> None:
        w = self.windower
        while True:
            self._prepare_source(source)
            persisted = w.sources[source].persisted_offset  # offsets at or below it are in the store (replays)
            new = [i for i in items if i.offset > persisted]
            w.observe(source, max(i.offset for i in items), max(i.record["event_time"] for i in items), now)
            metrics.REPLAY_SKIPPED.inc(len(items) - len(new))
            if not new:
                return
            kind = new[0].kind
            self._load_entities(source, kind, {_entity_id(kind, i.record) for i in new})
            part = BatchResult(new=new)
            changes = self._fold(source, kind, new, part)
            deltas = cell_deltas(changes)
            if not self._load_cells(source, deltas.touched()):
                continue  # state was dropped: start this source over from the store
            w.apply(source, changes, deltas)
            part.late.extend(i for i in new if w.count_late(i.record["event_time"]))
            result.add(part)
            return

    def _fold(self, source: Source, kind: str, new: Sequence[Item], result: BatchResult) -> list[Change]:
        """Fold the batch into each entity (only the final state per entity matters for the cells). Returns
        the changes; adds dead letters, duration samples and the events that changed their entity to ``result``.
        An event whose fold raises is dead-lettered (processing_error) and left out; so are all of an entity's
        events in this batch when its contribution cannot be computed, and that entity keeps its state."""
        w = self.windower
        states: dict[str, Any] = {}
        events: dict[str, list[Item]] = defaultdict(list)  # per entity, the events that changed it
        for item in new:
            try:
                eid = _entity_id(kind, item.record)
                old = states.get(eid)
                if old is None:
                    known = w.entity(source, eid)
                    old = known.state if known else None
                state = (newer_rating(old, rating_state(item.record)) if kind == "feedback"
                         else apply_ticket_event(old, item.record))
            except Exception as exc:  # the guard: one event never stops the batch
                self._fail(result, [item], exc)
                continue
            if state is not old:
                states[eid] = state
                events[eid].append(item)
        changes = []
        for eid, state in states.items():
            known = w.entity(source, eid)
            try:
                old_contribution: Contribution = ()
                old_quarantine: frozenset[str] = frozenset()
                if known is not None:
                    old_contribution = (known.contribution if known.contribution is not None
                                        else self._contribution(kind, known.state)[0])
                    old_quarantine = known.quarantined
                contribution, quarantine = self._contribution(kind, state)
            except Exception as exc:
                self._fail(result, events[eid], exc)
                continue
            last = events[eid][-1]
            result.changed.extend(events[eid])
            # a rating's contribution is cheap to recompute: only cases keep theirs in memory
            changes.append(Change(eid, state, old_contribution, contribution, last.record["event_time"],
                                  quarantine, keep_contribution=kind == "ticket"))
            if kind == "ticket":
                for sample in ("first_response", "resolution"):
                    at_and_ms = _duration_sample(contribution, sample)
                    if at_and_ms is not None and at_and_ms != _duration_sample(old_contribution, sample):
                        result.durations.append((sample, dict(state.dims).get("channel") or "unknown",
                                                 state.priority or "none", at_and_ms[1] / 1000))
            for reason in quarantine - old_quarantine if quarantine else ():
                result.quarantined.append(Quarantined(last, reason, _describe(state, reason)))
        return changes

    @staticmethod
    def _fail(result: BatchResult, items: Sequence[Item], exc: Exception) -> None:
        log.warning("processing_error in the window stage at %s/%d/%d: %s", items[0].topic, items[0].partition,
                    items[0].offset, type(exc).__name__)
        detail = f"{type(exc).__name__}: {str(exc)[:500]}"
        for item in items:
            result.quarantined.append(Quarantined(item, "processing_error", detail))
            result.failed.add((item.topic, item.partition, item.offset))

    def fold(self, items: Sequence[Item], now: float) -> BatchResult:
        """Count a batch into the window state (reading missing state from the store, retrying while it is
        down) without writing it: publish the result's late events and dead letters, then :meth:`persist`.
        Replays (offsets the store already holds) are skipped. ``now`` is wall-clock epoch seconds."""
        self.windower.wake(now)
        result = BatchResult()
        by_source: dict[Source, list[Item]] = defaultdict(list)
        for item in items:
            by_source[(item.topic, item.partition)].append(item)
        for source, source_items in by_source.items():
            self._process_source(source, source_items, now, result)
        return result

    def persist(self, items: Sequence[Item], result: BatchResult) -> None:
        """Write what :meth:`fold` counted: the window cells and the batch's events (not the processing_error
        ones). Returns only once ClickHouse holds them (retrying with back-off while it is down: the caller is
        blocked, which is the back-pressure); then the offsets may be acked."""
        rows = self.windower.dirty_rows()
        stored = [i for i in items if (i.topic, i.partition, i.offset) not in result.failed]
        feedback = [(i.partition, i.offset, i.record) for i in stored if i.kind == "feedback"]
        tickets = [(i.partition, i.offset, i.record) for i in stored if i.kind == "ticket"]
        started = time.perf_counter()
        self._retry("write", lambda: self.store.write(rows, feedback, tickets))
        metrics.SINK_FLUSH_SECONDS.labels("clickhouse").observe(time.perf_counter() - started)
        metrics.SINK_BATCH_ROWS.labels("clickhouse").observe(len(rows) + len(items))
        self.windower.mark_persisted(rows)
        metrics.ENTITIES_EVICTED.inc(self.windower.evict_entities(self.max_entities_per_source))
        _observe(result)

    def process(self, items: Sequence[Item], now: float) -> BatchResult:
        """:meth:`fold` then :meth:`persist`, for callers that publish nothing (tests, backfills into the store)."""
        result = self.fold(items, now)
        self.persist(items, result)
        return result

    def advance(self, now: float) -> tuple[set[WindowKey], set[WindowKey]]:
        """Advance the watermark: returns (final, current) as :meth:`Windower.finalise` does, and refreshes the
        roll-ups still due. Call only when every processed batch is persisted (under the pipeline's lock, on the
        thread that runs :meth:`process`)."""
        final, current = self.windower.finalise(now)
        metrics.LATE_EVENTS.inc(self.windower.late_events - self._late_reported)
        self._late_reported = self.windower.late_events
        watermark = self.windower.watermark(now)
        if watermark >= 0:
            metrics.WATERMARK_DELAY.set(max(0.0, now - watermark / 1000))
        self._retry("roll-up", self.store.refresh_rollups)
        return final, current

    def results(self, final: set[WindowKey], current: set[WindowKey], now: float) -> list[WindowResult]:
        """The results of what :meth:`advance` returned: final windows (new, or corrected by late events) and
        current results of open windows, with totals read from the store (every worker's sources); updates the
        gauges from final windows and, every ``rolling_interval_seconds``, the rolling gauges. Only reads the
        store, so it may run while the next batch is processed (one call at a time)."""
        keys = final | current
        totals = self._retry("read", lambda: self.store.totals(keys)) if keys else {}
        window = f"{self.windower.window_ms // 1000}s"
        for (dimension, value, start), agg in sorted(totals.items(), key=lambda kv: kv[0][2]):
            if (dimension, value, start) not in final or start < self._gauge_window.get((dimension, value), -1):
                continue  # the gauges show the latest final window
            self._gauge_window[(dimension, value)] = start
            if dimension not in GAUGE_DIMENSIONS:
                continue
            metrics.WINDOW_RATED.labels(dimension, value, window).set(agg.rated)
            if agg.csat_percent is not None:
                metrics.WINDOW_CSAT.labels(dimension, value, window).set(agg.csat_percent)
            else:  # undefined CSAT is absent, never exported as 0, NaN or an older window's value
                with suppress(KeyError):
                    metrics.WINDOW_CSAT.remove(dimension, value, window)
        if now - self._rolling_at >= self.rolling_interval_seconds:
            self._rolling_at = now
            self._set_rolling(self._retry("read", lambda: self.store.rolling_totals(
                int(now), ROLLING_PERIODS, GAUGE_DIMENSIONS)))
        return [WindowResult(k, a, k in final) for k, a in sorted(totals.items(), key=lambda kv: kv[0][2])]

    def _set_rolling(self, totals: Mapping[tuple[str, str, str], tuple[int, int]]) -> None:
        """Rolling gauges from (dimension, value, period) -> (rated, satisfied); label sets that no longer
        have feedback are removed, and CSAT is absent while nothing was rated."""
        for labels in self._rolling_labels - totals.keys():
            metrics.ROLLING_RATED.remove(*labels)
            metrics.ROLLING_CSAT.remove(*labels)
        for labels, (rated, satisfied) in totals.items():
            metrics.ROLLING_RATED.labels(*labels).set(rated)
            metrics.ROLLING_CSAT.labels(*labels).set(100.0 * satisfied / rated)
        self._rolling_labels = {labels for labels, (rated, _) in totals.items()}


def _duration_sample(contribution: Contribution, sample: str) -> tuple[int, int] | None:
    """(window start, duration ms) of the ``first_response`` or ``resolution`` sample in a case's
    contribution, if it has one."""
    if sample == "first_response":
        return next(((k[2], a.first_response_ms) for k, a in contribution if a.first_responses), None)
    return next(((k[2], a.resolution_ms) for k, a in contribution if a.resolved), None)


def _observe(result: BatchResult) -> None:
    """Business and stage metrics of a stored batch: counted per label set, then added once."""
    rated: Counter[tuple[str, str]] = Counter()
    satisfied: Counter[tuple[str, str]] = Counter()
    kinds: Counter[str] = Counter()
    scores: dict[str, list[float]] = defaultdict(list)  # channel -> scores (a labels() lookup costs 1.3 us)
    for item in result.new:
        kinds[item.kind] += 1
    for item in result.changed:  # a repeated event, or an older version of a rating, is not counted again
        record = item.record
        if item.kind != "feedback" or record["satisfied"] is None:
            continue
        labels = (record["channel"], record.get("team") or UNKNOWN)
        rated[labels] += 1
        satisfied[labels] += bool(record["satisfied"])
        if record["score"] is not None:
            scores[record["channel"]].append(record["score"])
    for channel, values in scores.items():
        histogram = metrics.FEEDBACK_SCORE.labels(channel)
        for score in values:
            histogram.observe(score)
    for labels, count in rated.items():
        metrics.FEEDBACK_RATED.labels(*labels).inc(count)
        metrics.FEEDBACK_SATISFIED.labels(*labels).inc(satisfied[labels])
    for kind, count in kinds.items():
        metrics.EVENTS_OUT.labels(STAGE_LABEL[Stage.WINDOW], kind).inc(count)
    histograms = {"first_response": metrics.FIRST_RESPONSE_SECONDS, "resolution": metrics.RESOLUTION_SECONDS}
    for sample, channel, priority, seconds in result.durations:
        histograms[sample].labels(channel, priority).observe(seconds)


def _entity_id(kind: str, record: Mapping[str, Any]) -> str:
    """Ratings are identified by rating_id, cases by ticket_id."""
    return str(record["rating_id" if kind == "feedback" else "ticket_id"])


def _describe(case: CaseState, reason: str) -> str:
    return (f"{reason}: created_at={case.created_at} first_response_at={case.first_response_at} "
            f"resolved_at={case.resolved_at} (ms); not counted in first-response or resolution time")
