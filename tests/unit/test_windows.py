"""The streaming window state equals a plain batch recomputation, for any arrival order, batching,
partitioning, crash/replay and restart from the store."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.windows import FeedbackAgg, Windower, WindowKey, aggregate, window_start

DIMS = ("all", "channel", "team")
WINDOW_S = 60

record_st = st.fixed_dictionaries({
    "event_time": st.integers(1_700_000_000_000, 1_700_000_000_000 + 10 * 60_000),
    "channel": st.sampled_from(["chat", "email", "phone"]),
    "team": st.sampled_from(["a", "b", None]),
    "satisfied": st.sampled_from([True, False, None]),
    "score": st.sampled_from([None, 1.0, 2.333333, 4.0, 4.444444, 5.0]),
})


class FakeStore:
    """Stored rows per (partition, key) -> (agg, version), as ClickHouse FINAL would return them."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, WindowKey], tuple[FeedbackAgg, int]] = {}

    def persisted_offset(self, partition: int) -> int:
        return max((v for (p, _), (_, v) in self.rows.items() if p == partition), default=-1)

    def write(self, windower: Windower) -> None:
        rows = windower.dirty_rows()
        for row in rows:
            a = row.agg
            self.rows[(row.partition, row.key)] = (FeedbackAgg(a.rated, a.satisfied, a.scored, a.score_micros),
                                                   row.version)
        windower.mark_persisted(rows)

    def totals(self) -> dict[WindowKey, FeedbackAgg]:
        out: dict[WindowKey, FeedbackAgg] = {}
        for (_, key), (agg, _) in self.rows.items():
            out.setdefault(key, FeedbackAgg()).merge(agg)
        return out


def feed(windower: Windower, store: FakeStore, partition: int, batch: list[tuple[int, dict[str, Any]]],
         now: float) -> None:
    if not windower.is_loaded(partition):
        windower.load_partition(partition, store.persisted_offset(partition))
    missing = windower.missing_cells(partition, batch)
    stored = {k: store.rows[(partition, k)][0] for k in missing if (partition, k) in store.rows}
    windower.load_cells(partition, missing, {k: FeedbackAgg(a.rated, a.satisfied, a.scored, a.score_micros)
                                             for k, a in stored.items()})
    for offset, record in batch:
        windower.add(partition, offset, record, now)


def rated_only(cells: dict[WindowKey, FeedbackAgg]) -> dict[WindowKey, FeedbackAgg]:
    return {k: v for k, v in cells.items() if v.rated}


@settings(max_examples=200, deadline=None)
@given(records=st.lists(record_st, max_size=120), partitions=st.integers(1, 4), data=st.data())
def test_streaming_equals_batch(records: list[dict[str, Any]], partitions: int, data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(records))))
    # assign each record to a partition; offsets follow arrival order within a partition
    logs: dict[int, list[tuple[int, dict[str, Any]]]] = {p: [] for p in range(partitions)}
    for i in order:
        p = data.draw(st.integers(0, partitions - 1))
        logs[p].append((len(logs[p]), records[i]))
    store = FakeStore()
    windower = Windower(DIMS, WINDOW_S, 3600, 5)
    for p, log in logs.items():
        pos = 0
        while pos < len(log):
            size = data.draw(st.integers(1, 20))
            feed(windower, store, p, log[pos:pos + size], now=0.0)
            if data.draw(st.booleans()):  # crash before the write: state lost, offsets not acked -> replay
                windower = Windower(DIMS, WINDOW_S, 3600, 5)
                if data.draw(st.booleans()):  # crash after the write but before the ack: replayed too
                    continue
                continue
            store.write(windower)
            pos += size
    assert store.totals() == rated_only(aggregate(records, DIMS, WINDOW_S * 1000))


@settings(max_examples=100, deadline=None)
@given(records=st.lists(record_st, max_size=80), data=st.data())
def test_replay_after_write_is_not_double_counted(records: list[dict[str, Any]], data: st.DataObject) -> None:
    log = list(enumerate(records))
    store = FakeStore()
    windower = Windower(DIMS, WINDOW_S, 3600, 5)
    cut = data.draw(st.integers(0, len(log)))
    feed(windower, store, 0, log[:cut], 0.0)
    store.write(windower)
    # the ack was lost: a fresh worker replays everything from offset 0
    windower = Windower(DIMS, WINDOW_S, 3600, 5)
    feed(windower, store, 0, log, 0.0)
    store.write(windower)
    assert store.totals() == rated_only(aggregate(records, DIMS, WINDOW_S * 1000))


def test_rollup_equals_direct_coarser_window() -> None:
    base = 1_700_000_000_000
    records = [{"event_time": base + i * 7_919, "channel": "chat", "satisfied": i % 3 == 0, "score": 1.0 + i % 5}
               for i in range(2_000)]
    minute = aggregate(records, ("channel",), 60_000)
    hourly: dict[WindowKey, FeedbackAgg] = {}
    for (d, v, start), agg in minute.items():
        hourly.setdefault((d, v, window_start(start, 3_600_000)), FeedbackAgg()).merge(agg)
    assert hourly == aggregate(records, ("channel",), 3_600_000)


def test_csat_undefined_when_nothing_rated() -> None:
    agg = FeedbackAgg()
    assert agg.csat_percent is None and agg.average_score is None
    agg.add_record({"satisfied": None, "score": None})
    assert agg.rated == 0


def test_watermark_finalises_with_grace_and_idle() -> None:
    w = Windower(("all",), 60, 10, idle_seconds=5)
    w.load_partition(0, -1)
    w.load_cells(0, [("all", "all", 0)], {})
    w.add(0, 0, {"event_time": 30_000, "satisfied": True, "score": 5.0}, now=100.0)
    w.mark_persisted(w.dirty_rows())
    assert w.finalise(now=100.0) == set()  # watermark 30 s < 60 s + 10 s grace
    # idle for 45 s: event time advances with the wall clock -> 75 s >= 70 s
    assert w.finalise(now=145.0) == {("all", "all", 0)}
    assert w.finalise(now=146.0) == set()  # emitted once
    assert w.partitions[0].cells == {}  # evicted after emission


def test_late_event_is_counted_applied_and_reemitted() -> None:
    w = Windower(("all",), 60, 0, idle_seconds=5)
    w.load_partition(0, -1)
    w.load_cells(0, [("all", "all", 0), ("all", "all", 120_000)], {})
    w.add(0, 0, {"event_time": 10_000, "satisfied": True, "score": None}, now=0.0)
    w.add(0, 1, {"event_time": 130_000, "satisfied": True, "score": None}, now=0.0)
    w.mark_persisted(w.dirty_rows())
    assert w.finalise(0.0) == {("all", "all", 0)}
    w.load_cells(0, [("all", "all", 0)], {})  # evicted: loaded again from the store before the late event
    w.add(0, 2, {"event_time": 10_000, "satisfied": False, "score": None}, now=0.0)
    assert w.late_events == 1
    w.mark_persisted(w.dirty_rows())
    assert w.finalise(0.0) == {("all", "all", 0)}  # emitted again as a correction


def test_burst_after_quiet_spell_waits_for_every_partition() -> None:
    w = Windower(("all",), 60, 0, idle_seconds=5)
    w.assign([0, 1], now=0.0)
    for p in (0, 1):
        w.load_partition(p, -1)
        w.load_cells(p, [("all", "all", 0), ("all", "all", 600_000)], {})
    w.wake(100.0)  # both idle since assignment: partition 1 gets 5 s again
    w.add(0, 0, {"event_time": 600_000, "satisfied": True, "score": None}, now=100.0)
    assert w.finalise(now=101.0) == set()  # partition 1 (nothing seen yet) holds the watermark back
    w.add(1, 0, {"event_time": 1_000, "satisfied": False, "score": None}, now=102.0)
    assert w.late_events == 0
    assert w.finalise(now=102.0) == set()  # both busy: watermark = min(600 s, 1 s)
    assert ("all", "all", 0) in w.finalise(now=108.0)  # both idle: event time advances with the wall clock
