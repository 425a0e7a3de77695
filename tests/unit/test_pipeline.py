"""The worker's batch protocol in-process: the real Pipeline, stage by stage as the app's agents run it
(Pipeline.step), on the in-memory broker and stores of tests/fakes.py. Its promises: (1) outputs acknowledged,
(2) then written, (3) then committed; a rebalance waits for the batch in flight; a re-keyed record is counted
once; a failed write commits nothing; every mode and any crash ends with the batch computation's totals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.aggregates import WindowAgg
from domain.clean import clean, entity_key
from domain.entities import CaseRules, WindowKey, batch_cells
from satpulse import codec, metrics, topics
from satpulse.settings import Settings
from satpulse.stages import Stage
from sinks.clickhouse import ClickHouseError
from sinks.retry import RetryStopped
from streams.broker import TopicPartition
from streams.pipeline import Batch, Pipeline
from tests.fakes import (
    Crash,
    Faults,
    MemoryBroker,
    MemoryDeadLetterStore,
    MemoryKafka,
    MemoryWindowStore,
    memory_stores,
)

HOUR_MS = 3_600_000
BASE = (int(time.time() * 1000) // HOUR_MS - 6) * HOUR_MS  # six hours ago: every event is in the past
ALL_STAGES = list(Stage)
# worker processes of each mode, by stages: combined (clean events counted as published), split over two
# processes (the window stage reads them back), and one process reading back (topics not co-partitioned)
MODES: dict[str, list[list[Stage]]] = {"combined": [ALL_STAGES], "split": [[Stage.CLEAN], [Stage.WINDOW,
                                                                                          Stage.DEAD_LETTERS]],
                                      "read back": [ALL_STAGES]}


def rating(rid: str, minute: int, value: int, version: int = 0, channel: str = "chat", team: str | None = "a"
           ) -> dict[str, Any]:
    return {"kind": "feedback", "rating_id": rid, "rating_version": version, "event_id": f"{rid}v{version}",
            "source": "test", "channel": channel, "team": team, "event_time": BASE + minute * 60_000,
            "rating_value": value, "rating_scale": "1-5"}


def ticket(tid: str, status: str, minute: int, priority: str = "high") -> dict[str, Any]:
    return {"kind": "ticket", "ticket_id": tid, "event_id": f"{tid}-{status}-{minute}", "source": "test",
            "channel": "email", "status": status, "priority": priority, "event_time": BASE + minute * 60_000}


INVALID = {"kind": "feedback", "event_id": "x", "source": "test", "channel": "chat"}  # no event_time
SUBMISSIONS = [rating("r1", 0, 5), rating("r2", 1, 2, team=None), rating("r1", 2, 1, version=1),
               rating("r3", 70, 4, channel="phone"), ticket("t1", "created", 0), ticket("t1", "first_response", 5),
               ticket("t1", "resolved", 40), ticket("t2", "created", 3), ticket("t2", "resolved", 2), INVALID,
               rating("r2", 1, 2, team=None)]  # the last: the same event again


class World:
    """One fake cluster and one set of stores, outliving the worker processes started on them."""

    def __init__(self, mode: str = "combined", max_rows: int = 20_000) -> None:
        self.faults = Faults()
        self.kafka = MemoryKafka(partitions=4, faults=self.faults)
        if mode == "read back":
            self.kafka.create(topics.FEEDBACK, 2)  # not co-partitioned with the ingest topic
        self.store = MemoryWindowStore(self.faults)
        self.dead_letters = MemoryDeadLetterStore(self.faults)
        self.mode = mode
        self.max_rows = max_rows

    def settings(self, stages: Sequence[Stage] = ALL_STAGES) -> Settings:
        return Settings(worker_stages=list(stages), flush_max_rows=self.max_rows, worker_id="test-worker")

    def pipeline(self, stages: Sequence[Stage] = ALL_STAGES) -> tuple[Pipeline, MemoryBroker]:
        """A new worker process (not started) and its group member."""
        broker = MemoryBroker(self.kafka, "test-worker")
        return Pipeline(self.settings(stages), broker, memory_stores(self.store, self.dead_letters)), broker

    async def start(self) -> list[Pipeline]:
        """The worker processes of the mode, started."""
        pipelines = [self.pipeline(stages)[0] for stages in MODES[self.mode]]
        for p in pipelines:
            await p.start()
        return pipelines

    def submit(self, raw: dict[str, Any], key: bytes | None = None) -> None:
        """Publish a submission to the ingest topic as an adapter does (keyed by its clean event's key)."""
        key = key if key is not None else (entity_key(raw) or "").encode()
        self.kafka.produce(topics.INGEST, key, json.dumps(raw).encode())


def expected_cells(submissions: Sequence[dict[str, Any]], s: Settings) -> dict[WindowKey, WindowAgg]:
    """The batch computation over the clean events of ``submissions`` (domain.entities.batch_cells)."""
    records: dict[str, list[Any]] = {"feedback_event": [], "ticket_event": []}
    now_ms = int(time.time() * 1000)
    for raw in submissions:
        if raw is not INVALID:
            cleaned = clean(raw, now_ms, s.future_tolerance_seconds * 1000)
            records[cleaned.schema].append(cleaned.record)
    rules = CaseRules(s.sla_first_response_seconds, s.sla_resolution_seconds, s.max_duration_seconds * 1000)
    return batch_cells(records["feedback_event"], records["ticket_event"], s.dimensions, s.window_seconds * 1000,
                       rules)


async def run_batch(pipeline: Pipeline, batch: Batch) -> None:
    """Every stage of ``batch`` in order, as the app's agents chain them; raises the failed stage's exception."""
    for stage in Stage:
        if not await pipeline.step(stage, batch):
            break
    await batch.done


async def drain(pipelines: Sequence[Pipeline], tick: bool = True) -> None:
    """Fetch and process batches (with a tick after each, unless not ``tick``) until no worker fetches
    anything."""
    while True:
        fetched = False
        for p in pipelines:
            batch = await p.fetch()
            if batch is not None:
                fetched = True
                await run_batch(p, batch)
                if tick:
                    await p.tick()
        if not fetched:
            return


def counter(family: Any, *labels: str) -> float:
    return float(family.labels(*labels)._value.get())


def test_a_batch_is_committed_only_after_its_outputs_are_acknowledged_and_written() -> None:
    async def scenario() -> World:
        world = World()
        for raw in SUBMISSIONS:
            world.submit(raw)
        (pipeline,) = await world.start()
        await drain([pipeline], tick=False)
        await pipeline.stop()
        return world

    world = asyncio.run(scenario())
    # the ingest batch: (1) its clean events and dead letter acknowledged, then the window stage's dead letter
    # (a resolution before its creation), (2) the counts written, (3) the commit; the dead letters come back
    # from their topic in the next batch: (2) written, (3) committed; the stop publishes the window results
    assert world.faults.journal == [f"publish {topics.DEAD_LETTER} {topics.FEEDBACK} {topics.TICKETS}",
                                    f"publish {topics.DEAD_LETTER}", "write", "commit", "dead-letter write",
                                    "commit", f"publish {topics.METRICS}"]
    assert world.store.cell_totals() == expected_cells(SUBMISSIONS, world.settings())
    assert sorted(key[4:] for key in world.dead_letters.rows) == [("cleaner", "missing_field"),
                                                                 ("window", "negative_duration")]


def test_a_rebalance_waits_until_the_batches_in_flight_are_committed() -> None:
    async def scenario() -> list[str]:
        pipeline = Pipeline(Settings())
        events: list[str] = []
        in_flight = asyncio.get_running_loop().create_future()
        pipeline._in_flight.add(in_flight)
        in_flight.add_done_callback(pipeline._in_flight.discard)

        async def revoke() -> None:
            await pipeline.revoke([TopicPartition("satpulse.ingest.v1", 0)])
            events.append("revoked")

        revoking = asyncio.create_task(revoke())
        await asyncio.sleep(0.05)
        events.append("committed")
        in_flight.set_result(None)
        await revoking
        assert not pipeline._in_flight
        return events

    assert asyncio.run(scenario()) == ["committed", "revoked"]


def test_a_rebalance_during_a_batch_resumes_after_it_without_counting_twice() -> None:
    async def scenario() -> World:
        world = World()
        for raw in SUBMISSIONS[:4]:
            world.submit(raw)
        pipeline, broker = world.pipeline()
        await pipeline.start()
        batch = await pipeline.fetch()
        assert batch is not None
        rebalancing = asyncio.create_task(broker.rebalance())
        await asyncio.sleep(0.01)
        assert not rebalancing.done()  # waiting for the batch in flight
        await run_batch(pipeline, batch)
        await rebalancing
        assert world.faults.journal[-2:] == ["write", "commit"]  # the revocation ended after the commit
        for raw in SUBMISSIONS[4:]:
            world.submit(raw)
        await drain([pipeline])  # from the committed offsets, with the partitions' state reloaded
        await pipeline.stop()
        return world

    world = asyncio.run(scenario())
    assert world.store.cell_totals() == expected_cells(SUBMISSIONS, world.settings())


def test_an_ingest_record_keyed_otherwise_is_re_published_under_its_clean_key_and_counted_once() -> None:
    raw = rating("r9", 3, 5)
    clean_key = (entity_key(raw) or "").encode()
    kafka = MemoryKafka(partitions=4)
    kafka.create(topics.INGEST)
    wrong = next(k for k in (f"k{i}".encode() for i in range(100))
                 if kafka.partition_for(topics.INGEST, k) != kafka.partition_for(topics.INGEST, clean_key))

    async def scenario() -> World:
        world = World()
        world.submit(raw, key=wrong)
        world.submit(rating("r8", 4, 1))
        (pipeline,) = await world.start()
        await drain([pipeline])
        await pipeline.stop()
        return world

    rekeyed = counter(metrics.EVENTS_OUT, "cleaner", "rekeyed")
    world = asyncio.run(scenario())
    assert counter(metrics.EVENTS_OUT, "cleaner", "rekeyed") - rekeyed == 1
    ingest = [(key, json.loads(value)["rating_id"]) for log in world.kafka.logs[topics.INGEST] for key, value in log]
    assert sorted(ingest) == sorted([(wrong, "r9"), (b"r8", "r8"), (clean_key, "r9")])
    assert len(world.kafka.values(topics.FEEDBACK)) == 2  # each clean event published once
    assert [r["rating_id"] for _, _, r in world.store.feedback].count("r9") == 1
    assert world.store.cell_totals() == expected_cells([raw, rating("r8", 4, 1)], world.settings())


def test_a_failed_write_commits_nothing_and_the_replay_counts_everything_once() -> None:
    async def scenario() -> World:
        world = World()
        for raw in SUBMISSIONS:
            world.submit(raw)
        (pipeline,) = await world.start()
        world.faults.write, world.faults.write_error = 1, ClickHouseError
        pipeline.request_stop()  # the retry gives up at the first failure
        batch = await pipeline.fetch()
        assert batch is not None
        with pytest.raises(RetryStopped):
            await run_batch(pipeline, batch)
        await pipeline.stop()
        assert world.kafka.committed.get("test-worker", {}) == {}
        assert world.store.cells == {} and "commit" not in world.faults.journal
        (restarted,) = await world.start()
        await drain([restarted])
        await restarted.stop()
        return world

    world = asyncio.run(scenario())
    assert len(world.kafka.values(topics.FEEDBACK)) == 2 * 5  # published before the failed write, and again
    assert world.store.cell_totals() == expected_cells(SUBMISSIONS, world.settings())


def test_events_stored_by_a_worker_that_died_before_writing_their_cells_are_not_taken_as_counted() -> None:
    """Combined stages, the process dies between storing a batch's clean events and writing its cells: the
    replay publishes those events again at later offsets, and the restarted worker fetches smaller batches. Once
    the partition's high-water mark passes the first copies, a rating replayed after that is not mistaken for
    one already counted (the first copies were never counted)."""

    async def scenario() -> tuple[World, list[dict[str, Any]]]:
        world = World(max_rows=2)
        ids = [f"r{i}" for i in range(40) if world.kafka.partition_for(topics.INGEST, f"r{i}".encode()) == 0][:4]
        raws = [rating(rid, minute, 5) for minute, rid in enumerate(ids)]
        for raw in raws:
            world.submit(raw)
        (pipeline,) = await world.start()
        first = await pipeline.fetch()
        assert first is not None
        await run_batch(pipeline, first)  # r0, r1: counted and committed
        world.faults.write, world.faults.write_stores_events = 1, True
        second = await pipeline.fetch()
        assert second is not None
        with pytest.raises(Crash):
            await run_batch(pipeline, second)  # r2, r3: events stored, cells not
        await pipeline.stop()
        world.faults.write_stores_events = False
        world.max_rows = 1
        (restarted,) = await world.start()
        await drain([restarted])
        await restarted.stop()
        return world, raws

    world, raws = asyncio.run(scenario())
    assert world.store.cell_totals() == expected_cells(raws, world.settings())


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_counts_what_the_batch_computation_counts(mode: str) -> None:
    async def scenario() -> World:
        world = World(mode, max_rows=3)
        for raw in SUBMISSIONS:
            world.submit(raw)
        pipelines = await world.start()
        assert [p.combined for p in pipelines] == [mode == "combined"] * len(pipelines)
        await drain(pipelines)
        for p in pipelines:
            await p.stop()
        return world

    world = asyncio.run(scenario())
    assert world.store.cell_totals() == expected_cells(SUBMISSIONS, world.settings())
    assert sorted(key[4:] for key in world.dead_letters.rows) == [("cleaner", "missing_field"),
                                                                 ("window", "negative_duration")]


def test_a_write_makes_its_window_results_due_at_once_and_at_most_every_publish_interval() -> None:
    """The window stage advances the watermark right after a write, so the next tick publishes the batch's
    results without waiting for an interval; a write within ``publish_interval_seconds`` of that advance waits
    for the next one, which a tick makes when no write did."""
    async def scenario() -> tuple[list[bool], list[int]]:
        world = World()
        pipeline = hourly_ticking(world)
        await pipeline.start()
        due, rated = [], []
        for rid in ("r1", "r2"):
            world.submit(rating(rid, 0, 5))
            batch = await pipeline.fetch()
            assert batch is not None
            await run_batch(pipeline, batch)
            due.append(pipeline.results_due.is_set())
            await pipeline.tick()
            rated.append(published_rated(world))
        pipeline.settings.publish_interval_seconds = 0.0  # the interval has passed, and no write came
        await pipeline.tick()
        rated.append(published_rated(world))
        await pipeline.stop()
        return due, rated

    due, rated = asyncio.run(scenario())
    assert due == [True, False]
    assert rated == [1, 1, 2]


def test_a_stop_publishes_the_results_of_the_window_stage_s_last_advance() -> None:
    async def scenario() -> int:
        world = World()
        pipeline = hourly_ticking(world)
        await pipeline.start()
        world.submit(rating("r1", 0, 5))
        batch = await pipeline.fetch()
        assert batch is not None
        await run_batch(pipeline, batch)  # advances the watermark: results due, no tick came
        pipeline.request_stop()
        await pipeline.stop()
        return published_rated(world)

    assert asyncio.run(scenario()) == 1


def hourly_ticking(world: World) -> Pipeline:
    """A worker process of every stage whose window stage advances the watermark at most once an hour."""
    settings = world.settings().model_copy(update={"publish_interval_seconds": 3600.0})
    return Pipeline(settings, MemoryBroker(world.kafka, "test-worker"), memory_stores(world.store, world.dead_letters))


def published_rated(world: World) -> int:
    """The highest ``rated`` published on the metrics topic for the all/all window (0: none)."""
    records = [codec.decode(value, codec.WINDOW_METRIC)[1] for value in world.kafka.values(topics.METRICS)]
    return max((r["rated"] for r in records if r["dimension"] == "all"), default=0)


def test_a_stage_name_that_is_no_stage_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValidationError, match="'clean', 'window' or 'dead_letters'"):
        Settings(worker_stages=["clean", "windows"])  # type: ignore[list-item]  # as the environment gives it
    with pytest.raises(ValidationError, match="at least 1 item"):
        Settings(worker_stages=[])


submission_st = st.one_of(
    st.builds(rating, st.sampled_from(["r1", "r2", "r3", "r4"]), st.integers(0, 90), st.integers(1, 5),
              st.integers(0, 2), st.sampled_from(["chat", "email"]), st.sampled_from(["a", "b", None])),
    st.builds(ticket, st.sampled_from(["t1", "t2", "t3"]),
              st.sampled_from(["created", "first_response", "resolved", "reopened", "closed"]),
              st.integers(0, 300), st.sampled_from(["high", "low"])))
CRASHES = ("before acks", "acks lost", "between acks and write", "between events and cells",
           "between write and commit")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(submissions=st.lists(submission_st, min_size=1, max_size=25), mode=st.sampled_from(list(MODES)),
       max_rows=st.integers(1, 8), restart_rows=st.integers(1, 8),
       crashes=st.dictionaries(st.integers(0, 5), st.sampled_from(CRASHES), min_size=1, max_size=3))
def test_any_crash_then_restart_ends_with_the_batch_totals(submissions: list[dict[str, Any]], mode: str,
                                                           max_rows: int, restart_rows: int,
                                                           crashes: dict[int, str]) -> None:
    """Crash the worker process running batch i at the drawn point, restart it on the same broker and stores
    (fetching batches of another size, as a real restart fetches what has arrived by then): once everything
    is processed the stored cells are exactly the batch computation's."""

    async def scenario() -> World:
        world = World(mode, max_rows)
        for raw in submissions:
            world.submit(raw)
        pipelines = await world.start()
        processed = crashed = 0
        while True:
            fetched = False
            for index, p in enumerate(pipelines):
                batch = await p.fetch()
                if batch is None:
                    continue
                fetched = True
                inject(world.faults, crashes.get(processed))
                processed += 1
                try:
                    await run_batch(p, batch)
                except Crash:
                    crashed += 1
                    await p.stop()  # the process is gone: its executors end, nothing more is committed
                    world.max_rows = restart_rows
                    pipelines[index] = world.pipeline(MODES[mode][index])[0]
                    await pipelines[index].start()
                    continue
                finally:
                    inject(world.faults, None)
                await p.tick()
            if not fetched:
                break
        for p in pipelines:
            await p.stop()
        event(f"{mode}: {crashed} crashes")
        return world

    world = asyncio.run(scenario())
    assert world.store.cell_totals() == expected_cells(submissions, world.settings())


def inject(faults: Faults, crash: str | None) -> None:
    """Make the next batch fail at ``crash`` (None: clear every fault)."""
    faults.publish = int(crash in ("before acks", "acks lost"))
    faults.publish_appends = crash == "acks lost"
    faults.write, faults.write_error = int(crash in ("between acks and write", "between events and cells")), Crash
    faults.write_stores_events = crash == "between events and cells"
    faults.commit = int(crash == "between write and commit")
