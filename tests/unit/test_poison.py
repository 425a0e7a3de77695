"""No single input stops a stage: the clean stage's route() and the window stage's fold end every record in a
clean event or a dead letter (issue: poison-proof), for the hostile corpus and for anything hypothesis makes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.clean import REASONS, Rejected, check_clean_record, clean, entity_key, normalise_channel
from domain.limits import DEFAULT_LIMITS, Limits, value_problem
from satpulse import codec, metrics
from satpulse.deadletter import DEFAULT_PAYLOAD_MAX_BYTES, Origin
from satpulse.settings import Settings
from streams import cleaner, window_worker
from streams.cleaner import route
from streams.pipeline import Pipeline
from streams.window_worker import BatchResult, Item, Quarantined
from tests.fakes import MemoryWindowStore
from tests.poison import BASE, FIELDS, poison_corpus
from tests.unit.test_windows import FB, TK, case_event, new_worker

NOW = 1_800_000_000_000
TOL = 300_000
ORIGIN = Origin("satpulse.ingest.v1", 2, 99)
DEAD_LETTER_BOUND = DEFAULT_PAYLOAD_MAX_BYTES + 4096


def assert_one_outcome(payload: bytes) -> cleaner.Routed:
    """route() returned one message: a clean event that decodes, or a dead letter within its size bound
    with a known reason, the origin, and the payload's size and hash."""
    routed = route(payload, ORIGIN, NOW, TOL)
    if isinstance(routed, cleaner.CleanMessage):
        assert routed.kind in ("feedback", "ticket") and len(routed.value) <= DEFAULT_LIMITS.max_event_bytes
        assert codec.decode(routed.value)[1] == routed.record
        return routed
    assert routed.reason in REASONS and len(routed.value) <= DEAD_LETTER_BOUND
    _, letter = codec.decode(routed.value, codec.DEAD_LETTER)
    assert (letter["origin_topic"], letter["origin_partition"], letter["origin_offset"]) == ("satpulse.ingest.v1",
                                                                                              2, 99)
    assert letter["payload_size"] == len(payload)
    assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert payload.startswith(letter["payload"])
    return routed


@pytest.mark.parametrize(("name", "payload"), poison_corpus(), ids=[n for n, _ in poison_corpus()])
def test_every_poison_payload_is_one_dead_letter(name: str, payload: bytes) -> None:
    assert assert_one_outcome(payload).reason not in (None, "processing_error"), name


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes(payload: bytes) -> None:
    assert_one_outcome(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30)
hostile = st.one_of(
    json_values, st.text(min_size=0, max_size=40), st.sampled_from(
        ["America", "Etc", "../x", "", " ", "0", "-1", "1.5", "1e308", "9" * 30, "2026-02-30", "in_app",
         "\u0000", "\u202e", "T" * 300]),
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_json_value(data: st.DataObject) -> None:
    assert_one_outcome(json.dumps(data.draw(json_values)).encode())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["feedback", "ticket"]), data=st.data())
def test_ingest_objects_with_hostile_field_values(kind: str, data: st.DataObject) -> None:
    raw: dict[str, Any] = dict(BASE) if kind == "feedback" else {**BASE, "kind": "ticket", "ticket_id": "t",
                                                                   "status": "created"}
    for name in data.draw(st.lists(st.sampled_from(FIELDS[kind]), min_size=1, max_size=5, unique=True)):
        raw[name] = data.draw(hostile)
    routed = assert_one_outcome(json.dumps(raw).encode())
    assert isinstance(routed, cleaner.CleanMessage) or routed.reason != "processing_error"
    assert entity_key(raw) is None or isinstance(entity_key(raw), str)


def test_an_unforeseen_exception_becomes_a_processing_error_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(cleaner, "clean", broken)
    routed = route(json.dumps(BASE).encode(), ORIGIN, NOW, TOL)
    assert routed.reason == "processing_error"
    assert codec.decode(routed.value)[1]["detail"].startswith("KeyError")


def test_dead_letter_carries_a_bounded_prefix_size_and_hash() -> None:
    payload = b'{"comment": "' + b"x" * 1_000_000 + b'"}'
    routed = route(payload, ORIGIN, NOW, TOL)
    assert routed.reason == "too_large" and len(routed.value) < DEAD_LETTER_BOUND
    small = route(payload, ORIGIN, NOW, TOL, dead_letter_payload_max_bytes=100)
    assert len(codec.decode(small.value)[1]["payload"]) == 100


@pytest.mark.parametrize(("raw", "reason"), [
    ({**BASE, "timezone": "America", "event_time": "2026-01-01T00:00:00"}, "bad_timestamp"),
    ({**BASE, "timezone": "x" * 300, "event_time": "2026-01-01T00:00:00"}, "too_large"),
    ({**BASE, "rating_version": -1}, "invalid_field"),
    ({**BASE, "rating_version": 1.5}, "invalid_field"),
    ({**BASE, "event_id": "e" * 257}, "too_large"),
    ({**BASE, "team": {"a": 1}}, "invalid_field"),
    ({**BASE, "secondary_ratings": [{"question_id": "q", "rating_value": 5, "rating_scale": "1-5"}] * 101},
     "too_large"),
])
def test_validation(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(Rejected) as info:
        clean(raw, NOW, TOL)
    assert info.value.reason == reason


def test_valid_versions_and_channels() -> None:
    assert clean({**BASE, "rating_version": "7"}, NOW, TOL).record["rating_version"] == 7
    assert clean({**BASE, "channel": "in_app"}, NOW, TOL).record["channel"] == "in_app"
    assert normalise_channel("In App") == "in_app"


def test_limits_walk_without_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert value_problem({"a": deep}) is not None and value_problem({"a": deep})[0] == "too_deep"  # type: ignore[index]
    assert value_problem({"a": [1] * 20}, Limits(max_items=10)) == ("too_large", "more than 10 values in the document")


@pytest.mark.parametrize("change", [{"rating_version": -1}, {"event_time": -5}, {"channel": "pigeon"},
                                   {"score": 9.0}, {"team": "t" * 300}, {"comment": "c" * 20_000},
                                   {"score": float("nan")}])
def test_clean_records_read_back_are_checked(change: dict[str, Any]) -> None:
    record = clean(BASE, NOW, TOL).record
    check_clean_record(record)
    with pytest.raises(Rejected) as info:
        check_clean_record({**record, **change})
    assert info.value.reason == "invalid_field"


# --- the window stage ----------------------------------------------------------------------------------------

def test_a_fold_that_raises_dead_letters_that_event_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = window_worker.apply_ticket_event

    def fragile(case: Any, record: Any) -> Any:
        if record["event_id"] == "resolved30":
            raise ZeroDivisionError("a defect")
        return real(case, record)

    monkeypatch.setattr(window_worker, "apply_ticket_event", fragile)
    store = MemoryWindowStore()
    worker = new_worker(store)
    items = [Item(TK, 0, i, "ticket", case_event(status, minutes))
             for i, (status, minutes) in enumerate([("created", 0), ("resolved", 30), ("first_response", 5)])]
    result = worker.process(items, 0.0)
    assert [(q.item.offset, q.reason) for q in result.quarantined] == [(1, "processing_error")]
    assert result.failed == {(TK, 0, 1)}
    assert [r["event_id"] for _, _, r in store.tickets] == ["created0", "first_response5"]  # not stored
    cells = store.cell_totals()
    assert sum(a.created for k, a in cells.items() if k[0] == "all") == 1
    assert sum(a.resolved for a in cells.values()) == 0


def rated_total() -> float:
    return sum(s.value for m in metrics.FEEDBACK_RATED.collect() for s in m.samples if s.name.endswith("_total"))


def test_redelivered_ratings_are_counted_once_in_the_business_counters() -> None:
    worker = new_worker(MemoryWindowStore())
    rating = {"kind": "feedback", "rating_id": "r", "rating_version": 0, "event_id": "a", "event_time": 0,
              "channel": "chat", "team": None, "agent": None, "category": None, "product": None, "source": "s",
              "satisfied": True, "score": 5.0}
    before = rated_total()
    worker.process([Item(FB, 0, 0, "feedback", rating)], 0.0)
    worker.process([Item(FB, 0, 1, "feedback", rating)], 0.0)  # the same file imported again: new offset
    assert rated_total() - before == 1
    worker.process([Item(FB, 0, 2, "feedback", {**rating, "rating_version": 1, "event_id": "b"})], 0.0)
    assert rated_total() - before == 2  # an edit is a change


def test_window_outputs_are_published_before_the_write() -> None:
    """The pipeline's window unit: fold, publish (acked), write — a crash anywhere replays what was not
    written, so its dead letters are never lost."""
    calls: list[str] = []
    pipeline = Pipeline(Settings())
    item = Item(TK, 0, 7, "ticket", case_event("created", 0))

    class Worker:
        def fold(self, items: Any, now: float) -> BatchResult:
            calls.append("fold")
            return BatchResult(quarantined=[Quarantined(item, "negative_duration", "x")])

        def persist(self, items: Any, result: BatchResult) -> None:
            calls.append("persist")

    async def publish(messages: Any, partitions: Any = ()) -> list[tuple[int, int]]:
        calls.append(f"publish {len(messages)}")
        return []

    async def in_executor(fn: Any, *args: Any, executor: Any = None) -> Any:
        return fn(*args)

    pipeline._window_worker = Worker()  # type: ignore[assignment]
    pipeline._publish = publish  # type: ignore[method-assign]
    pipeline._in_executor = in_executor  # type: ignore[method-assign]
    asyncio.run(pipeline._count([item], {(TK, 0, 7): b"v"}))
    assert calls == ["fold", "publish 1", "persist"]
