"""What each rating and each support case contributes to window cells. Pure.

A rating's state is its newest version; a case's state folds all its lifecycle events. Both folds are
order-independent, so any arrival order gives the same state; the window stage withdraws an entity's old
contribution and adds its new one whenever its state changes (rating edits, late lifecycle events).

Case rules (docs/metrics.md#support-cases):
- created_at / first_response_at: the earliest such event; resolved_at: the latest ``resolved`` event.
  ``closed`` is recorded but is not a resolution (an abandoned call or an auto-closed spam case is closed
  without being resolved; helpdesks send "solved" before "closed", which adapters map to ``resolved``).
- first-response time = first_response_at - created_at, counted in the window of first_response_at;
  resolution time = resolved_at - created_at (full resolution time), counted in the window of resolved_at.
  A reopened case resolved again therefore moves its one resolution to the new time, with the new duration.
- a duration below zero or above the configured maximum is quarantined: never counted, reported once.
- SLA breach: a duration above the target for the case's priority, named by its newest event that names one
  (no target: never breached).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Generic, NamedTuple, TypeVar

from domain.aggregates import WindowAgg, duration_agg, rating_agg

# (dimension, dimension value, window start in epoch ms)
WindowKey = tuple[str, str, int]
Contribution = tuple[tuple[WindowKey, WindowAgg], ...]
UNKNOWN = "unknown"  # dimension value for a record that lacks it
# The dimensions, declared once (docs/metrics.md#adding-a-metric-or-a-dimension): clean-record fields that window
# cells are kept by. Settings accept only these (and "all"); the event tables' columns, the rows read back to
# rebuild ratings and cases, and the report's --by choices follow from this tuple, by name.
DIMENSION_FIELDS = ("channel", "team", "agent", "category", "product", "source")


def window_start(event_time_ms: int, window_ms: int) -> int:
    """Start of the tumbling window holding ``event_time_ms`` (windows are [start, start + size))."""
    return event_time_ms - event_time_ms % window_ms


K = TypeVar("K")
V = TypeVar("V")


class _Shared(Generic[K, V]):
    """A bounded memo of immutable values that many entities share instead of holding copies; cleared when it
    reaches ``limit`` entries (values handed out stay valid: they are never mutated)."""

    def __init__(self, limit: int) -> None:
        self._values: dict[K, V] = {}
        self._limit = limit

    def get(self, key: K, build: Callable[[], V]) -> V:
        value = self._values.get(key)
        if value is None:
            if len(self._values) >= self._limit:
                self._values.clear()
            value = self._values[key] = build()
        return value


def cell_keys(dims: Mapping[str, str | None], dimensions: Iterable[str], start: int) -> list[WindowKey]:
    """One cell per configured dimension; ``all`` is the total."""
    return [(d, "all" if d == "all" else (dims.get(d) or UNKNOWN), start) for d in dimensions]


# one shared tuple per distinct combination of dimension values: thousands of entities point to the same few
# combinations, so sharing them halves an entity's memory
Dims = tuple[tuple[str, str | None], ...]
_SHARED_DIMS: _Shared[Dims, Dims] = _Shared(100_000)


def _dims(record: Mapping[str, Any]) -> Dims:
    dims = tuple((name, record.get(name)) for name in DIMENSION_FIELDS)
    return _SHARED_DIMS.get(dims, lambda: dims)


# --- ratings ----------------------------------------------------------------------------------------------
class RatingState(NamedTuple):
    version: int
    event_id: str
    event_time: int
    dims: tuple[tuple[str, str | None], ...]
    satisfied: bool | None
    score: float | None


def rating_state(record: Mapping[str, Any]) -> RatingState:
    return RatingState(record["rating_version"], record["event_id"], record["event_time"], _dims(record),
                       record["satisfied"], record["score"])


def newer_rating(old: RatingState | None, new: RatingState) -> RatingState:
    """The newest version wins (ties: the highest event id, so arrival order never matters); a repeated
    event keeps the state already counted."""
    if old is None or (new.version, new.event_id) > (old.version, old.event_id):
        return new
    return old


# contributions are values: ratings with equal dimensions, window, verdict and score share one
_RATING_CONTRIBUTIONS: _Shared[tuple[Any, ...], Contribution] = _Shared(20_000)


def rating_contribution(state: RatingState, dimensions: Iterable[str], window_ms: int) -> Contribution:
    """The cells a rating counts in. The result may be shared with other ratings: never mutate its aggregates."""
    if state.satisfied is None:
        return ()
    dimensions = tuple(dimensions)
    start = window_start(state.event_time, window_ms)
    satisfied, score = state.satisfied, state.score

    def build() -> Contribution:
        agg = rating_agg(satisfied, score)
        return tuple((key, agg) for key in cell_keys(dict(state.dims), dimensions, start))

    return _RATING_CONTRIBUTIONS.get((state.dims, start, satisfied, score, dimensions), build)


# --- support cases ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CaseState:
    event_ids: frozenset[str] = frozenset()
    created_at: int | None = None
    first_response_at: int | None = None
    resolved_at: int | None = None
    closed_at: int | None = None
    reopened_at: tuple[int, ...] = ()
    priority: str | None = None
    dims: tuple[tuple[str, str | None], ...] = ()
    dims_stamp: tuple[int, str] = (-1, "")  # (event_time, event_id) of the event the dims come from
    priority_stamp: tuple[int, str] = (-1, "")  # the same, of the newest event that named a priority
    last_event_time: int = 0


def _earliest(current: int | None, value: int) -> int:
    return value if current is None else min(current, value)


def _latest(current: int | None, value: int) -> int:
    return value if current is None else max(current, value)


def apply_ticket_event(case: CaseState | None, record: Mapping[str, Any]) -> CaseState:
    """Fold one clean ticket event into the case; a repeated event id leaves the case unchanged."""
    case = case or CaseState()
    if record["event_id"] in case.event_ids:
        return case
    t, status = record["event_time"], record["status"]
    changes: dict[str, Any] = {"event_ids": case.event_ids | {record["event_id"]},
                               "last_event_time": max(case.last_event_time, t)}
    if status == "created":
        changes["created_at"] = _earliest(case.created_at, t)
    elif status == "first_response":
        changes["first_response_at"] = _earliest(case.first_response_at, t)
    elif status == "resolved":
        changes["resolved_at"] = _latest(case.resolved_at, t)
    elif status == "closed":
        changes["closed_at"] = _latest(case.closed_at, t)
    elif status == "reopened":
        changes["reopened_at"] = tuple(sorted((*case.reopened_at, t)))
    stamp = (t, record["event_id"])
    if stamp > case.dims_stamp:  # the newest event names the dimensions (ties: highest event id)
        changes["dims"] = _dims(record)
        changes["dims_stamp"] = stamp
    if record.get("priority") and stamp > case.priority_stamp:  # and the newest that has one, the priority
        changes["priority"] = record["priority"]
        changes["priority_stamp"] = stamp
    return replace(case, **changes)


@dataclass(frozen=True, slots=True)
class CaseRules:
    """SLA targets (seconds) per priority and the longest duration believed."""

    first_response_sla: Mapping[str, int]
    resolution_sla: Mapping[str, int]
    max_duration_ms: int


# a case's aggregates are shared values too: recomputing a changed case gives the same objects for the parts that
# did not change, which lets the window stage cancel them instead of withdrawing and re-adding them
_CREATED = WindowAgg(created=1)
_REOPENED = WindowAgg(reopened=1)
_DURATION_AGGS: _Shared[tuple[str, int, bool], WindowAgg] = _Shared(10_000)  # ~600 bytes each
# the cell keys of one combination of dimension values and window start, and the (key, aggregate) pairs of a
# creation or reopening there, shared by every case they apply to: a case kept in memory then holds references
# instead of ~21 tuples of its own (3.9 -> 2.0 KB per resolved case)
_CASE_CELLS: _Shared[tuple[Any, ...], tuple[Any, ...]] = _Shared(50_000)


def case_contribution(case: CaseState, dimensions: Iterable[str], window_ms: int, rules: CaseRules
                      ) -> tuple[Contribution, frozenset[str]]:
    """Cells the case counts in, and the quarantine reasons of durations that are not counted. The aggregates
    may be shared with other cases: never mutate them."""
    dims, dimensions = dict(case.dims), tuple(dimensions)
    out: list[tuple[WindowKey, WindowAgg]] = []
    quarantined: set[str] = set()

    def add(at: int, agg: WindowAgg) -> None:
        start = window_start(at, window_ms)
        keys = _CASE_CELLS.get((case.dims, dimensions, start), lambda: tuple(cell_keys(dims, dimensions, start)))
        if agg is _CREATED or agg is _REOPENED:
            out.extend(_CASE_CELLS.get((case.dims, dimensions, start, agg is _CREATED),
                                       lambda: tuple((key, agg) for key in keys)))
        else:
            out.extend((key, agg) for key in keys)

    if case.created_at is not None:
        add(case.created_at, _CREATED)
    for reopened in case.reopened_at:
        add(reopened, _REOPENED)
    resolved_at = case.resolved_at
    samples: tuple[tuple[str, int | None, Mapping[str, int]], ...] = (
        ("first_response", case.first_response_at, rules.first_response_sla),
        ("resolution", resolved_at, rules.resolution_sla))
    for kind, at, sla in samples:
        if at is None or case.created_at is None:
            continue
        duration = at - case.created_at
        if duration < 0:
            quarantined.add("negative_duration")
        elif duration > rules.max_duration_ms:
            quarantined.add("absurd_duration")
        else:
            target = sla.get(case.priority or "")
            breached = target is not None and duration > target * 1000
            add(at, _DURATION_AGGS.get((kind, duration, breached), partial(duration_agg, kind, duration, breached)))
    return tuple(out), frozenset(quarantined)


# --- batch reference ----------------------------------------------------------------------------------------
def batch_cells(feedback: Iterable[Mapping[str, Any]], tickets: Iterable[Mapping[str, Any]],
                dimensions: Iterable[str], window_ms: int, rules: CaseRules) -> dict[WindowKey, WindowAgg]:
    """Plain recomputation of every cell from all events (the reference the streaming state must equal)."""
    dimensions = tuple(dimensions)
    ratings: dict[str, RatingState] = {}
    for r in feedback:
        ratings[r["rating_id"]] = newer_rating(ratings.get(r["rating_id"]), rating_state(r))
    cases: dict[str, CaseState] = {}
    for t in tickets:
        cases[t["ticket_id"]] = apply_ticket_event(cases.get(t["ticket_id"]), t)
    cells: dict[WindowKey, WindowAgg] = {}
    contributions = [rating_contribution(s, dimensions, window_ms) for s in ratings.values()]
    contributions += [case_contribution(c, dimensions, window_ms, rules)[0] for c in cases.values()]
    for contribution in contributions:
        for key, agg in contribution:
            cells.setdefault(key, WindowAgg()).merge(agg)
    return {k: v for k, v in cells.items() if not v.is_empty()}
