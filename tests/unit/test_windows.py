"""The streaming window stage (WindowWorker + Windower, against an in-memory store with ClickHouse's
semantics) equals a plain batch recomputation, for any arrival order, batching, partitioning, rating edits,
duplicates, crash/replay and restart from the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.aggregates import WindowAgg
from domain.entities import (
    CaseRules,
    CaseState,
    WindowKey,
    apply_ticket_event,
    batch_cells,
    case_contribution,
    window_start,
)
from domain.store import StoredEvent
from domain.windows import CellRow, Change, Source, Windower, cell_deltas
from satpulse import metrics, topics
from streams.window_worker import Item, WindowWorker
from tests.fakes import Faults, MemoryWindowStore

DIMS = ("all", "channel", "team")
WINDOW_S = 60
RULES = CaseRules({"high": 600}, {"high": 1800}, 3 * 3600 * 1000)
BASE = 1_700_000_000_000
FB, TK = topics.FEEDBACK, topics.TICKETS  # the topics MemoryWindowStore knows by default


def new_worker(store: MemoryWindowStore, max_entities: int = 50_000) -> WindowWorker:
    return WindowWorker(Windower(WINDOW_S, 3600, 5), store, DIMS, RULES,  # type: ignore[arg-type]
                        sleep=lambda _: None, max_entities_per_source=max_entities)


feedback_st = st.fixed_dictionaries({
    "kind": st.just("feedback"),
    "rating_id": st.sampled_from([f"r{i}" for i in range(12)]),
    "rating_version": st.integers(0, 3),
    "event_time": st.integers(BASE, BASE + 10 * 60_000),
    "channel": st.sampled_from(["chat", "email", "phone"]),
    "team": st.sampled_from(["a", "b", None]),
    "satisfied": st.sampled_from([True, False, None]),
    "score": st.sampled_from([None, 1.0, 2.333333, 4.0, 4.444444, 5.0]),
})
ticket_st = st.fixed_dictionaries({
    "kind": st.just("ticket"),
    "ticket_id": st.sampled_from([f"t{i}" for i in range(8)]),
    "status": st.sampled_from(["created", "first_response", "resolved", "reopened", "closed"]),
    "event_time": st.integers(BASE, BASE + 4 * 3600_000),
    "channel": st.sampled_from(["chat", "email"]),
    "team": st.sampled_from(["a", None]),
    "priority": st.sampled_from(["high", "low", None]),
})


def finish(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every record the remaining fields; equal (rating_id, version) pairs become exact duplicates."""
    out = []
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for i, r in enumerate(records):
        r = {"agent": None, "category": None, "product": None, "source": "s", **r}
        if r["kind"] == "feedback":
            r = seen.setdefault((r["rating_id"], r["rating_version"]), {**r, "event_id": f"e{i}"})
        else:
            r["event_id"] = f"e{i}"
        out.append(r)
    return out


def final_quarantines(tickets: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(ticket id, reason) of every quarantine of the cases' final states, computed in one batch."""
    cases: dict[str, CaseState] = {}
    for record in tickets:
        cases[record["ticket_id"]] = apply_ticket_event(cases.get(record["ticket_id"]), record)
    return {(tid, reason) for tid, case in cases.items()
            for reason in case_contribution(case, DIMS, WINDOW_S * 1000, RULES)[1]}


def case_event(status: str, minutes: int, priority: str | None = "high", team: str | None = None
               ) -> dict[str, Any]:
    """A clean lifecycle event of case "c" on the chat channel (event id: status and minute)."""
    return {"ticket_id": "c", "event_id": f"{status}{minutes}", "status": status,
            "event_time": BASE + minutes * 60_000, "priority": priority, "channel": "chat", "team": team,
            "agent": None, "category": None, "product": None, "source": "s"}


def case_item(offset: int, status: str, minutes: int, priority: str | None = "high", team: str | None = None
              ) -> Item:
    return Item(TK, 0, offset, "ticket", case_event(status, minutes, priority, team))


@settings(max_examples=150, deadline=None)
@given(raw=st.lists(st.one_of(feedback_st, ticket_st), max_size=80), partitions=st.integers(1, 3),
       data=st.data())
def test_streaming_equals_batch(raw: list[dict[str, Any]], partitions: int, data: st.DataObject) -> None:
    records = finish(raw)
    order = data.draw(st.permutations(range(len(records))))
    # route like Kafka: an entity always lands in the same partition; offsets follow arrival order
    logs: dict[Source, list[Item]] = {}
    for i in order:
        r = records[i]
        entity = r["rating_id"] if r["kind"] == "feedback" else r["ticket_id"]
        source = (FB if r["kind"] == "feedback" else TK, hash(entity) % partitions)
        log = logs.setdefault(source, [])
        log.append(Item(source[0], source[1], len(log), r["kind"], r))
    store = MemoryWindowStore()
    # tiny caches move entities out of memory after every batch: they must come back from the store intact
    max_entities = data.draw(st.sampled_from([1, 3, 50_000]))
    worker = new_worker(store, max_entities)
    positions = dict.fromkeys(logs, 0)
    dead_letters: set[tuple[str, str]] = set()  # (ticket id, reason) published to the dead-letter topic
    while any(positions[s] < len(log) for s, log in logs.items()):
        source = data.draw(st.sampled_from([s for s, log in logs.items() if positions[s] < len(log)]))
        size = data.draw(st.integers(1, 15))
        batch = logs[source][positions[source]:positions[source] + size]
        crash = data.draw(st.sampled_from(["none", "none", "before_fold", "before_write", "after_write"]))
        if crash == "before_fold":  # state lost, nothing written, offsets not acked: replayed
            worker = new_worker(store, max_entities)
            continue
        result = worker.fold(batch, now=0.0)
        # published (acked) before the write, as the pipeline does
        dead_letters |= {(q.item.record["ticket_id"], q.reason) for q in result.quarantined}
        if crash == "before_write":
            worker = new_worker(store, max_entities)
            continue
        worker.persist(batch, result)
        if crash == "after_write":  # written but the ack was lost: a fresh worker replays the batch
            worker = new_worker(store, max_entities)
            continue
        positions[source] += size
    feedback = [r for r in records if r["kind"] == "feedback"]
    tickets = [r for r in records if r["kind"] == "ticket"]
    assert store.cell_totals() == batch_cells(feedback, tickets, DIMS, WINDOW_S * 1000, RULES)
    # every quarantine of a case's final state reached the dead-letter topic, whatever crashed where
    assert final_quarantines(tickets) <= dead_letters


def test_rating_edit_replaces_the_older_version_in_its_window() -> None:
    store = MemoryWindowStore()
    worker = new_worker(store)
    first = {"kind": "feedback", "rating_id": "r", "rating_version": 1, "event_id": "a", "event_time": BASE,
             "channel": "chat", "team": None, "agent": None, "category": None, "product": None, "source": "s",
             "satisfied": False, "score": 2.0}
    edit = {**first, "rating_version": 2, "event_id": "b", "event_time": BASE + 120_000, "satisfied": True,
            "score": 5.0}
    worker.process([Item(FB, 0, 0, "feedback", first)], 0.0)
    worker.process([Item(FB, 0, 1, "feedback", edit)], 0.0)
    cells = store.cell_totals()
    old_window = ("all", "all", window_start(BASE, 60_000))
    assert old_window not in cells  # withdrawn from the old window
    assert cells[("all", "all", window_start(BASE + 120_000, 60_000))].satisfied == 1
    worker.process([Item(FB, 0, 2, "feedback", first)], 0.0)  # an older version arriving late: ignored
    assert store.cell_totals() == cells


def test_reopened_case_counts_its_new_resolution_once() -> None:
    events = [case_event("created", 0), case_event("resolved", 10), case_event("reopened", 20),
              case_event("resolved", 40)]
    case = None
    for record in events:
        case = apply_ticket_event(case, record)
    cells = batch_cells([], events, ("all",), 60_000, RULES)
    resolved = {k: v for k, v in cells.items() if v.resolved}
    assert list(resolved) == [("all", "all", BASE + 40 * 60_000 - (BASE + 40 * 60_000) % 60_000)]
    agg = next(iter(resolved.values()))
    assert agg.resolution_ms == 40 * 60_000 and agg.resolution_breaches == 1  # 40 min > 30 min SLA
    assert sum(v.reopened for v in cells.values()) == 1


def test_resolving_a_case_rewrites_only_its_resolution_cells() -> None:
    store = MemoryWindowStore()
    worker = new_worker(store)

    items = [case_item(0, "created", 0, team="a"), case_item(1, "first_response", 5, team="a"),
             case_item(2, "resolved", 30, team="a")]
    written: list[WindowKey] = []
    write = store.write

    def recording_write(cells: Sequence[CellRow], feedback: Sequence[StoredEvent],
                        tickets: Sequence[StoredEvent]) -> None:
        written.extend(row.key for row in cells if row.key[0] != "__checkpoint__")
        write(cells, feedback, tickets)

    store.write = recording_write  # type: ignore[method-assign]
    worker.process(items[:2], 0.0)
    written.clear()
    worker.process(items[2:], 0.0)
    resolved_start = window_start(BASE + 30 * 60_000, 60_000)
    assert sorted(written) == sorted((d, v, resolved_start) for d, v in (("all", "all"), ("channel", "chat"),
                                                                          ("team", "a")))
    assert store.cell_totals() == batch_cells([], [dict(i.record) for i in items], DIMS, 60_000, RULES)


def test_negative_duration_is_quarantined_not_counted() -> None:
    store = MemoryWindowStore()
    worker = new_worker(store)

    result = worker.process([case_item(0, "resolved", 0, None), case_item(1, "created", 5, None)], 0.0)
    assert [q.reason for q in result.quarantined] == ["negative_duration"]
    assert sum(v.resolved for v in store.cell_totals().values()) == 0
    assert worker.process([case_item(2, "first_response", 6, None)], 0.0).quarantined == []  # reported once


def test_store_outage_is_retried_until_it_succeeds() -> None:
    from sinks.clickhouse import ClickHouseError

    store = MemoryWindowStore(Faults(write=3, write_error=ClickHouseError))
    worker = new_worker(store)
    record = {"kind": "feedback", "rating_id": "r", "rating_version": 0, "event_id": "a", "event_time": BASE,
              "channel": "chat", "team": None, "agent": None, "category": None, "product": None, "source": "s",
              "satisfied": True, "score": 5.0}
    worker.process([Item(FB, 0, 0, "feedback", record)], 0.0)
    assert store.faults.write == 0 and store.cell_totals()[("all", "all", window_start(BASE, 60_000))].rated == 1


def test_watermark_finalises_with_grace_and_idle() -> None:
    w = Windower(60, 10, idle_seconds=5)
    source = (FB, 0)
    w.assign([source], now=100.0)
    w.ensure_source(source, -1)
    w.load_cells(source, [("all", "all", 0)], {})
    w.observe(source, 0, 30_000, now=100.0)
    changes = [Change("r", None, (), ((("all", "all", 0), WindowAgg(rated=1)),), 30_000)]
    w.apply(source, changes, cell_deltas(changes))
    w.mark_persisted(w.dirty_rows())
    final, current = w.finalise(now=100.0)
    assert final == set() and current == {("all", "all", 0)}  # busy source at 30 s < 60 s + 10 s grace
    final, _ = w.finalise(now=145.0)  # idle: the watermark becomes the wall clock
    assert final == {("all", "all", 0)}
    assert w.finalise(now=146.0) == (set(), set())  # emitted once
    assert w.sources[source].cells == {}  # evicted after emission


_KEYS = [("all", "all", 0), ("channel", "chat", 0), ("all", "all", 60_000)]
_AGGS: list[dict[str, Any]] = [{"rated": 1, "satisfied": 1}, {"created": 1}, {"resolved": 1, "resolution_ms": 5_000}]
# an entry: a key and an aggregate's values; each drawn entry gets its own WindowAgg object
entry_st = st.tuples(st.sampled_from(_KEYS), st.sampled_from(range(len(_AGGS))))


def _contribution(entries: list[tuple[Any, int]]) -> tuple[tuple[Any, WindowAgg], ...]:
    return tuple((key, WindowAgg(**_AGGS[agg])) for key, agg in entries)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(entry_st, max_size=5), st.lists(entry_st, max_size=5)), max_size=6),
       st.data())
def test_cell_deltas_are_the_net_of_withdrawing_every_old_and_adding_every_new_contribution(
        pairs: list[tuple[list[Any], list[Any]]], data: st.DataObject) -> None:
    changes = []
    for before, after in pairs:
        old, new = _contribution(before), _contribution(after)
        if data.draw(st.booleans()):  # the same objects, as a shared contribution or a kept prefix would be
            new = old[:data.draw(st.integers(0, len(old)))] + new
        changes.append(Change("e", None, old, new, 0))
    expected: dict[Any, WindowAgg] = {}
    for change in changes:
        for contribution, sign in ((change.old_contribution, -1), (change.contribution, 1)):
            for key, agg in contribution:
                expected.setdefault(key, WindowAgg()).add_scaled(agg, sign)
    deltas = cell_deltas(changes)
    actual = {key: WindowAgg() for key in deltas.touched()}
    for contribution, weight in deltas.whole:
        for key, agg in contribution:
            actual[key].add_scaled(agg, weight)
    for key, agg, weight in deltas.entries:
        actual[key].add_scaled(agg, weight)
    assert {k: a for k, a in actual.items() if not a.is_empty()} == {
        k: a for k, a in expected.items() if not a.is_empty()}


def test_a_resolved_case_touches_only_its_resolution_cells_even_with_equal_but_distinct_aggregates() -> None:
    created = [(("all", "all", 0), WindowAgg(created=1))]
    first_response = [(("all", "all", 60_000), WindowAgg(first_responses=1, first_response_ms=60_000))]
    resolution = [(("all", "all", 120_000), WindowAgg(resolved=1, resolution_ms=120_000))]
    same_again = [(key, agg.copy()) for key, agg in first_response]  # rebuilt, e.g. after a memo was cleared
    changes = [Change("c", None, tuple(created + first_response), tuple(created + same_again + resolution), 0)]
    assert cell_deltas(changes).touched() == {("all", "all", 120_000)}


def test_entities_leave_memory_beyond_the_cap_oldest_first_and_when_idle_beyond_the_horizon() -> None:
    w = Windower(60, 0, idle_seconds=5, entity_horizon_seconds=3600)
    source = (FB, 0)
    w.assign([source], now=0.0)
    w.ensure_source(source, -1)
    changes = [Change(f"r{i}", None, (), (), BASE + i * 60_000) for i in range(6)]
    w.apply(source, changes, cell_deltas(changes))
    assert w.evict_entities(4) == 2  # the two least recently changed
    assert list(w.sources[source].entities) == ["r2", "r3", "r4", "r5"]
    assert "r0" in w.sources[source].evicted and w.missing_entities(source, ["r0", "r5", "new"]) == {"r0"}
    # idle since before the watermark - grace - horizon: gone at the next look, which comes once per minute
    hour = 3600_000
    w.observe(source, 0, BASE + 150_000 + hour, now=0.0)  # cutoff: r2's last change (2 min) is older
    w.finalise(now=1.0)
    assert list(w.sources[source].entities) == ["r3", "r4", "r5"]
    w.observe(source, 1, BASE + 200_000 + hour, now=2.0)
    w.finalise(now=3.0)  # r3 (3 min) is idle now too, but 50 s of event time is too soon for another look
    assert list(w.sources[source].entities) == ["r3", "r4", "r5"]
    w.observe(source, 2, BASE + 270_000 + hour, now=4.0)
    w.finalise(now=5.0)
    assert list(w.sources[source].entities) == ["r5"]


def test_burst_after_quiet_spell_waits_for_every_source() -> None:
    w = Windower(60, 0, idle_seconds=5)
    a, b = (FB, 0), (FB, 1)
    w.assign([a, b], now=0.0)
    for s in (a, b):
        w.ensure_source(s, -1)
    w.wake(100.0)  # both idle since assignment: each gets 5 s again
    w.observe(a, 0, 600_000, now=100.0)
    assert w.watermark(101.0) == -1  # b has seen nothing yet and is not idle: it holds the watermark
    w.observe(b, 0, 1_000, now=102.0)
    assert not w.count_late(1_000)
    assert w.watermark(102.0) == 1_000


def test_rollup_equals_direct_coarser_window() -> None:
    records = [{"rating_id": f"r{i}", "rating_version": 0, "event_id": f"e{i}", "event_time": BASE + i * 7_919,
                "channel": "chat", "team": None, "agent": None, "category": None, "product": None, "source": "s",
                "satisfied": i % 3 == 0, "score": 1.0 + i % 5} for i in range(2_000)]
    minute = batch_cells(records, [], ("channel",), 60_000, RULES)
    hourly: dict[WindowKey, WindowAgg] = {}
    for (d, v, start), agg in minute.items():
        hourly.setdefault((d, v, window_start(start, 3_600_000)), WindowAgg()).merge(agg)
    assert hourly == batch_cells(records, [], ("channel",), 3_600_000, RULES)


def test_csat_undefined_when_nothing_rated() -> None:
    agg = WindowAgg()
    assert agg.csat_percent is None and agg.average_score is None and agg.mean_resolution_seconds is None




def test_resolution_histogram_observed_once_per_new_resolution() -> None:
    store = MemoryWindowStore()
    worker = new_worker(store)

    result = worker.process([case_item(0, "created", 0), case_item(1, "resolved", 30)], 0.0)
    assert result.durations == [("resolution", "chat", "high", 1800.0)]
    # a first response is observed once; the resolution is unchanged by it
    assert worker.process([case_item(2, "first_response", 5)], 0.0).durations == [
        ("first_response", "chat", "high", 300.0)]
    assert worker.process([case_item(3, "resolved", 90)], 0.0).durations == [("resolution", "chat", "high", 5400.0)]


def test_absurd_duration_is_quarantined() -> None:
    worker = new_worker(MemoryWindowStore())

    result = worker.process([case_item(0, "created", 0, None), case_item(1, "resolved", 4 * 60, None)], 0.0)
    # the longest duration believed is 3 h here
    assert [q.reason for q in result.quarantined] == ["absurd_duration"]


def test_merge_and_subtract_cover_every_field() -> None:
    """WindowAgg spells its merge out field by field: a field added later must be merged too."""
    for f in dataclasses.fields(WindowAgg):
        one = WindowAgg()
        value = getattr(one, f.name)
        if isinstance(value, int):
            setattr(one, f.name, 3)
        elif isinstance(value, list):
            value[2] = 3
        else:
            value[7] = 3
        total = WindowAgg()
        total.merge(one)
        assert total == one, f.name
        total.subtract(one)
        assert total.is_empty(), f.name


def test_rolling_csat_gauges_cover_their_periods() -> None:
    store = MemoryWindowStore()
    worker = new_worker(store)
    now = BASE // 1000 + 86400
    base = {"kind": "feedback", "rating_version": 1, "channel": "chat", "team": None, "agent": None,
            "category": None, "product": None, "source": "s", "score": None}
    ages = [(600, True), (1800, False), (5 * 3600, True), (30 * 3600, True)]  # seconds before now, satisfied
    items = [Item(FB, 0, i, "feedback", {**base, "rating_id": f"r{i}", "event_id": f"e{i}",
                                         "event_time": (now - age) * 1000, "satisfied": ok})
             for i, (age, ok) in enumerate(ages)]
    worker.process(items, float(now))
    worker.results(*worker.advance(float(now)), float(now))

    def gauge(name: str, period: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(name, {"dimension": "all", "value": "all", "period": period})

    assert [gauge("satpulse_rolling_rated", p) for p in ("15m", "1h", "24h")] == [1, 2, 3]
    csat = [gauge("satpulse_rolling_csat_percent", p) for p in ("15m", "1h", "24h")]
    assert csat == [100, 50, pytest.approx(200 / 3)]
    # a day later nothing is in any period: the label sets are removed, CSAT is absent, never 0
    worker.results(*worker.advance(float(now + 2 * 86400)), float(now + 2 * 86400))
    assert gauge("satpulse_rolling_rated", "24h") is None and gauge("satpulse_rolling_csat_percent", "15m") is None


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(["created", "first_response", "resolved", "reopened"]),
                                 st.integers(0, 3), st.sampled_from(["high", "low", None])), max_size=8),
       data=st.data())
def test_case_state_is_the_same_for_any_arrival_order(events: list[tuple[str, int, str | None]],
                                                      data: st.DataObject) -> None:
    records = [{**case_event(status, minutes, priority), "event_id": f"e{i}"}
               for i, (status, minutes, priority) in enumerate(events)]

    def fold(order: Sequence[dict[str, Any]]) -> CaseState | None:
        case = None
        for record in order:
            case = apply_ticket_event(case, record)
        return case

    assert fold(records) == fold(data.draw(st.permutations(records)))


def test_the_csat_gauge_is_absent_while_the_latest_final_window_has_no_ratings() -> None:
    worker = new_worker(MemoryWindowStore())
    labels = {"dimension": "channel", "value": "chat", "window": "60s"}
    rating = {"kind": "feedback", "rating_id": "g1", "rating_version": 0, "event_id": "g1", "event_time": BASE,
              "channel": "chat", "team": None, "agent": None, "category": None, "product": None, "source": "s",
              "satisfied": True, "score": 5.0}
    now = BASE / 1000 + 2 * 3600
    worker.process([Item(FB, 0, 0, "feedback", rating)], now)
    worker.results(*worker.advance(now), now)
    assert metrics.REGISTRY.get_sample_value("satpulse_window_csat_percent", labels) == 100
    worker.process([case_item(0, "created", 5)], now)  # a later window on chat with a case and no rating
    worker.results(*worker.advance(now + 10), now + 10)  # past the new source's idle time
    assert metrics.REGISTRY.get_sample_value("satpulse_window_rated", labels) == 0
    assert metrics.REGISTRY.get_sample_value("satpulse_window_csat_percent", labels) is None
