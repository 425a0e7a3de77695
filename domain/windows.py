"""Event-time tumbling windows with our own watermark, state kept per source partition. Pure, no I/O.

A *source* is a (topic, partition). Each source's contribution to a window cell is one stored row with the
full counts and, as its version, the highest offset of that source included; replaying a source after a
crash rebuilds the same rows, and offsets at or below its persisted high-water mark are skipped, so nothing
counts twice. Entities (ratings, cases) carry their current contribution: when an entity changes, its old
contribution is withdrawn and the new one added. Faust's wall-clock window expiry and ``on_window_close`` are
not used (faust-streaming#250, #193).

Call order per batch and source: :meth:`Windower.ensure_source`, load missing entities
(:meth:`missing_entities` / :meth:`load_entities`), compute transitions with :meth:`entity`,
compute their :func:`cell_deltas`, load the cells those touch (:meth:`missing_cells` / :meth:`load_cells`),
:meth:`apply`; then persist :meth:`dirty_rows` and call :meth:`mark_persisted`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

from domain.aggregates import WindowAgg
from domain.bloom import BloomFilter
from domain.entities import Contribution, WindowKey

Source = tuple[str, int]  # (topic, partition)
# a row per source written with every batch: its version is the source's high-water mark even when the batch
# changed no cell (e.g. comment-only feedback), so a restart never re-applies an acknowledged offset
CHECKPOINT_KEY: WindowKey = ("__checkpoint__", "", 0)
IDLE_SCAN_MS = 60_000  # how much event time passes between two looks for entities idle beyond the horizon


@dataclass(slots=True)
class Entity:
    """A rating or case: its state, what it adds to cells now (None: not kept, recompute it from the state),
    and the quarantine reasons already reported."""

    state: Any
    contribution: Contribution | None
    quarantined: frozenset[str]
    last_event_time: int


@dataclass(slots=True)
class SourceState:
    """Cells and entities of one source. ``persisted_offset``: highest offset already in the store.
    ``stored_starts``: window starts whose cells the store may hold while memory does not (stored before this
    worker took the source, or evicted since). Entities missing from memory may be in the store if they were
    evicted (``evicted``, a Bloom filter) or if the source had stored data when this worker took it
    (``stored_before``). Everything else missing from memory is known to be empty, so it is not looked up.
    ``entities`` is in least-recently-changed order."""

    persisted_offset: int = -1
    max_offset: int = -1
    cells: dict[WindowKey, WindowAgg] = field(default_factory=dict)
    dirty: set[WindowKey] = field(default_factory=set)
    entities: dict[str, Entity] = field(default_factory=dict)
    stored_starts: set[int] = field(default_factory=set)
    stored_before: bool = False
    evicted: BloomFilter = field(default_factory=BloomFilter)


@dataclass(slots=True)
class SourceClock:
    """Event-time progress of one assigned source (-1: nothing seen yet)."""

    max_event_time: int
    last_arrival: float


class Change(NamedTuple):
    """An entity's new state: what it contributed until now (() if new) and what it contributes from now on.
    ``keep_contribution=False`` saves memory for entities whose contribution is cheap to recompute."""

    entity_id: str
    state: Any
    old_contribution: Contribution
    contribution: Contribution
    event_time: int
    quarantined: frozenset[str] = frozenset()
    keep_contribution: bool = True


class CellRow(NamedTuple):
    """One row for the store: the full state of a cell for one source, versioned by offset."""

    source: Source
    key: WindowKey
    agg: WindowAgg
    version: int


class CellDeltas(NamedTuple):
    """What a batch's entity changes do to cells, net: whole contributions added (weight > 0) or withdrawn
    (weight < 0), and single entries of contributions that changed in part. Weights that cancel are left out."""

    whole: list[tuple[Contribution, int]]
    entries: list[tuple[WindowKey, WindowAgg, int]]

    def touched(self) -> set[WindowKey]:
        """The cells the deltas touch (the ones :meth:`Windower.apply` needs loaded)."""
        return {key for contribution, _ in self.whole for key, _ in contribution} | {k for k, _, _ in self.entries}


def cell_deltas(changes: Iterable[Change]) -> CellDeltas:
    """The net cell deltas of ``changes``. Equal contribution objects (ratings share them) are added up and
    applied once, scaled by their net count. When an entity had a contribution and still has one, only the
    entries that differ count: a case that gets resolved adds its resolution cells and leaves its creation and
    first-response cells alone, which are often in windows already final and out of memory (entries are
    matched by cell key and equal aggregate)."""
    weights: dict[int, list[Any]] = {}  # id(contribution) -> [contribution, net count]
    entries: dict[tuple[WindowKey, int], list[Any]] = {}  # (key, id(aggregate)) -> [key, aggregate, net count]
    for change in changes:
        before, after = change.old_contribution, change.contribution
        if before == after:
            continue
        if before and after:
            for key, agg, weight in _differing_entries(before, after):
                entries.setdefault((key, id(agg)), [key, agg, 0])[2] += weight
        else:
            contribution, weight = (after, 1) if after else (before, -1)
            weights.setdefault(id(contribution), [contribution, 0])[1] += weight
    return CellDeltas([(c, w) for c, w in weights.values() if w], [(k, a, w) for k, a, w in entries.values() if w])


def _differing_entries(before: Contribution, after: Contribution) -> list[tuple[WindowKey, WindowAgg, int]]:
    """The entries of ``before`` that ``after`` lacks (weight -1) and those of ``after`` that ``before`` lacks
    (weight 1); an entry matches one with the same key and an equal aggregate (the same object, usually)."""
    same = 0  # a case's entries come in a fixed order, so a change usually keeps a prefix and appends
    while same < min(len(before), len(after)) and before[same] == after[same]:
        same += 1
    before, after = before[same:], after[same:]
    unmatched: dict[WindowKey, list[WindowAgg]] = {}
    for key, agg in before:
        unmatched.setdefault(key, []).append(agg)
    out: list[tuple[WindowKey, WindowAgg, int]] = []
    for key, agg in after:
        olds = unmatched.get(key)
        if olds:
            i = next((j for j, old in enumerate(olds) if old is agg), -1)
            if i < 0:
                i = next((j for j, old in enumerate(olds) if old == agg), -1)
            if i >= 0:
                del olds[i]
                continue
        out.append((key, agg, 1))
    out += [(key, agg, -1) for key, aggs in unmatched.items() for agg in aggs]
    return out


class Windower:
    """Window state of the sources this worker owns. Never blocks, never does I/O."""

    def __init__(self, window_seconds: int, grace_seconds: int, idle_seconds: float,
                 entity_horizon_seconds: int = 7 * 86400) -> None:
        self.window_ms = window_seconds * 1000
        self.grace_ms = grace_seconds * 1000
        self.idle_seconds = idle_seconds
        self.horizon_ms = entity_horizon_seconds * 1000
        self.sources: dict[Source, SourceState] = {}
        self.clocks: dict[Source, SourceClock] = {}
        self._watermark = -1
        self._finalised_until = -1  # every window ending at or before this was emitted as final
        self._corrected: set[WindowKey] = set()  # final windows changed by late events since last finalise
        self._touched: set[WindowKey] = set()  # cells changed since the last finalise (current results)
        self._idle_cutoff = -IDLE_SCAN_MS  # entities idle since before this were last looked for
        self.late_events = 0

    # --- assignment --------------------------------------------------------------------------------------
    def assign(self, sources: Iterable[Source], now: float) -> None:
        """Sources this worker now owns: each holds the watermark back until it has data or is idle."""
        for source in sources:
            self.clocks.setdefault(source, SourceClock(-1, now))

    def revoke(self, sources: Iterable[Source]) -> None:
        """Sources taken away: forget their state (unpersisted events were not acked and are replayed)."""
        for source in sources:
            self.clocks.pop(source, None)
            self.sources.pop(source, None)

    def wake(self, now: float) -> None:
        """Call when a batch arrives: if every source was idle, each gets ``idle_seconds`` again to show
        its data before it stops holding the watermark back (a burst after a quiet spell is not late)."""
        if all(now - c.last_arrival >= self.idle_seconds for c in self.clocks.values()):
            for clock in self.clocks.values():
                clock.last_arrival = now

    # --- loading ----------------------------------------------------------------------------------------
    def has_source(self, source: Source) -> bool:
        return source in self.sources

    def ensure_source(self, source: Source, persisted_offset: int, stored_starts: Iterable[int] = ()) -> None:
        """Start tracking a source whose store high-water mark is ``persisted_offset`` (-1: none) and that has
        cells stored in the windows starting at ``stored_starts`` (ms)."""
        if source not in self.sources:
            self.sources[source] = SourceState(persisted_offset, persisted_offset, stored_starts=set(stored_starts),
                                               stored_before=persisted_offset >= 0)

    def drop_source(self, source: Source) -> None:
        """Forget a source's state (not its clock), to be loaded again from the store."""
        self.sources.pop(source, None)

    def missing_entities(self, source: Source, ids: Iterable[str]) -> set[str]:
        """Ids to look up in the store: not in memory, and the store may hold them."""
        state = self.sources[source]
        entities, evicted = state.entities, state.evicted
        if state.stored_before:
            return {i for i in ids if i not in entities}
        return {i for i in ids if i not in entities and i in evicted}

    def load_entities(self, source: Source, loaded: Mapping[str, Entity]) -> None:
        """Install entities rebuilt from the store."""
        self.sources[source].entities.update(loaded)

    def entity(self, source: Source, entity_id: str) -> Entity | None:
        """An entity's current state and contribution, or None."""
        return self.sources[source].entities.get(entity_id)

    def missing_cells(self, source: Source, keys: Iterable[WindowKey]) -> set[WindowKey]:
        """Keys to look up in the store; keys missing from memory that the store cannot hold start empty."""
        state = self.sources[source]
        cells, stored_starts = state.cells, state.stored_starts
        missing = set()
        for key in keys:
            if key not in cells:
                if key[2] in stored_starts:
                    missing.add(key)
                else:
                    cells[key] = WindowAgg()
        return missing

    def load_cells(self, source: Source, keys: Iterable[WindowKey], stored: Mapping[WindowKey, WindowAgg]
                   ) -> None:
        """Install cells read from the store (absent ones start empty)."""
        cells = self.sources[source].cells
        for key in keys:
            cells[key] = stored[key].copy() if key in stored else WindowAgg()

    # --- processing -------------------------------------------------------------------------------------
    def observe(self, source: Source, offset: int, event_time: int, now: float) -> None:
        """Record arrivals for the watermark (every event, replays included): of one event, or of a batch with
        its highest offset and its latest event time."""
        clock = self.clocks.setdefault(source, SourceClock(-1, now))
        clock.last_arrival = now
        clock.max_event_time = max(clock.max_event_time, event_time)
        state = self.sources[source]
        if offset > state.persisted_offset:
            state.max_offset = max(state.max_offset, offset)

    def apply(self, source: Source, changes: Iterable[Change], deltas: CellDeltas) -> None:
        """Replace the contributions of changed entities: install their new states and add ``deltas``
        (:func:`cell_deltas` of the same ``changes``) to the cells, every key of which must be loaded."""
        src = self.sources[source]
        entities = src.entities
        for change in changes:
            old = entities.pop(change.entity_id, None)  # re-inserted below: most recently changed last
            last_time = max(change.event_time, old.last_event_time if old else change.event_time)
            kept = change.contribution if change.keep_contribution else None
            entities[change.entity_id] = Entity(change.state, kept, change.quarantined, last_time)
        cells = src.cells
        for contribution, weight in deltas.whole:
            for key, agg in contribution:
                cells[key].add_scaled(agg, weight)
                self._touch(src, key)
        for key, agg, weight in deltas.entries:
            cells[key].add_scaled(agg, weight)
            self._touch(src, key)

    def evict_entities(self, max_per_source: int) -> int:
        """Move the least recently changed entities beyond ``max_per_source`` out of memory (into the Bloom
        filter; they are reloaded from the store when they change again). Call only when every processed
        batch is persisted. Returns how many left."""
        evicted = 0
        for state in self.sources.values():
            excess = len(state.entities) - max_per_source
            if excess > 0:
                # one pass over the oldest: next(iter(dict)) per entity re-walks the slots freed by earlier
                # deletions, which made eviction quadratic (5 % of the worker's CPU after a minute at 10k/s)
                evicted += _evict(state, list(islice(state.entities, excess)))
        return evicted

    def _touch(self, src: SourceState, key: WindowKey) -> None:
        src.dirty.add(key)
        self._touched.add(key)
        if key[2] + self.window_ms <= self._finalised_until:
            self._corrected.add(key)

    def count_late(self, event_time: int) -> bool:
        """True (and counted) when the event's window was already final."""
        late = event_time - event_time % self.window_ms + self.window_ms <= self._finalised_until
        self.late_events += late
        return late

    def dirty_rows(self) -> list[CellRow]:
        """Rows to persist: every dirty cell, versioned with its source's highest offset seen, and a checkpoint
        row for every source that advanced."""
        rows = [CellRow(s, k, st.cells[k], st.max_offset) for s, st in self.sources.items() for k in st.dirty]
        rows += [CellRow(s, CHECKPOINT_KEY, WindowAgg(), st.max_offset) for s, st in self.sources.items()
                 if st.max_offset > st.persisted_offset]
        return rows

    def mark_persisted(self, rows: Iterable[CellRow]) -> None:
        """Record that ``rows`` are durably stored; call only after the store accepted them."""
        for row in rows:
            state = self.sources.get(row.source)
            if state is not None:
                state.dirty.discard(row.key)
                if row.key == CHECKPOINT_KEY:
                    state.persisted_offset = max(state.persisted_offset, row.version)

    # --- watermark, final windows, eviction -------------------------------------------------------------
    def watermark(self, now: float) -> int:
        """Event-time progress (ms), monotonic; ``now`` is wall-clock epoch seconds. Every assigned source
        that is busy holds it back (one that has seen nothing yet holds it where it is); a source idle for
        ``idle_seconds`` stops holding it back; when all are idle it is the wall clock (nothing more is
        coming, so every window up to now may close) or, for data stamped ahead of the clock, the newest
        event time plus the idle time."""
        clocks = list(self.clocks.values())
        busy = [c.max_event_time for c in clocks if now - c.last_arrival < self.idle_seconds]
        seen = [c for c in clocks if c.max_event_time >= 0]
        if busy:
            candidate = min(busy)
        elif seen:
            candidate = max(int(now * 1000), *(c.max_event_time + int((now - c.last_arrival) * 1000) for c in seen))
        else:
            candidate = -1
        self._watermark = max(self._watermark, candidate)
        return self._watermark

    def finalise(self, now: float) -> tuple[set[WindowKey], set[WindowKey]]:
        """(final, current): windows that became final since the last call plus final windows corrected by
        late events; and open windows changed since the last call. Evicts final, persisted cells and
        entities idle beyond the horizon. Call only when every processed batch is persisted."""
        closed_until = self.watermark(now) - self.grace_ms
        cutoff = closed_until - self.horizon_ms
        # idle entities are looked for once per minute of event time (a walk over every entity in memory)
        scan_idle = cutoff >= self._idle_cutoff + IDLE_SCAN_MS
        final, self._corrected = self._corrected, set()
        touched, self._touched = self._touched, set()
        for state in self.sources.values():
            for key in list(state.cells):
                end = key[2] + self.window_ms
                if end <= closed_until:
                    if end > self._finalised_until:
                        final.add(key)
                    if key not in state.dirty:
                        del state.cells[key]
                        state.stored_starts.add(key[2])
            if not state.dirty and scan_idle:
                _evict(state, [i for i, e in state.entities.items() if e.last_event_time < cutoff])
        if scan_idle:
            self._idle_cutoff = cutoff
        self._finalised_until = max(self._finalised_until, closed_until)
        current = {k for k in touched if k[2] + self.window_ms > self._finalised_until}
        return final, current


def _evict(state: SourceState, entity_ids: Iterable[str]) -> int:
    """Move entities out of memory into the source's Bloom filter (reloaded from the store when they change);
    returns how many."""
    count = 0
    for entity_id in entity_ids:
        del state.entities[entity_id]
        state.evicted.add(entity_id)
        count += 1
    return count
