"""The worker's hot path: one consumer-group member takes batches of every input topic through three thin
stages around pure functions, and commits a batch's offsets only once everything it produced is durable.

The commit protocol, per fetched batch (the steps are numbered in the code):

1. produce: publish every output of the batch and wait for the broker's acks (acks=all) -- the clean events
   and clean-stage dead letters (clean stage); the late events and window-stage dead letters (window stage,
   before its write);
2. write: the window cells and the clean events they count (window stage), the dead letters of the
   dead-letter topic (dead-letter stage) are in ClickHouse;
3. commit: the batch's input offsets, once its stages succeeded (:meth:`Pipeline.step` after the last
   stage), batches in fetch order. A stage that raises fails the batch: nothing of it is committed.

A crash at any point replays from the last commit, and every step is idempotent: the window stage skips
offsets already in the store (a batch written but not committed is a replay), a clean event cleaned and
published again (new offset) leaves its rating or case unchanged (both folds ignore a repeated event id), and
the dead-letter table replaces rows by origin, so nothing counts twice.

The stages:

- clean: raw JSON submissions (ingest topic) -> clean feedback / ticket events (Avro) or dead letters
  (:func:`streams.cleaner.route`).
- window: clean events -> per-source window cells and clean events in ClickHouse (:class:`WindowWorker`).
  Late events go to the late topic, quarantined durations to the dead-letter topic. While ClickHouse is down
  the batch waits (retrying with back-off) and nothing more is fetched beyond the consumer's bounded prefetch:
  that is the back-pressure.
- dead letters: dead-letter topic -> table ``dead_letters``.
- window results: the window stage advances the watermark right after it wrote a batch, at most every
  ``publish_interval_seconds`` (:meth:`Pipeline.tick` does when no batch did within that interval); the next
  :meth:`Pipeline.tick` (run as soon as :attr:`Pipeline.results_due` is set) reads the results (current and final)
  from ClickHouse on a second thread while the next batch is counted, and publishes them to the metrics topic.

Two execution modes. A worker that runs both the clean and the window stage counts the events it cleaned
without reading them back from Kafka ("combined": no second batch wait, no Avro decode). It subscribes to the
ingest topic only; a clean event is published to the partition of the ingest record it came from, at the
offset the broker acknowledged, and counted under that position exactly as if it had been consumed. That
needs co-partitioned topics: ingest, feedback and tickets with the same partition count (checked at start;
otherwise the worker reads the clean topics back), and an ingest record keyed by the key of its clean event
(:func:`domain.clean.entity_key`, as every adapter does), so that one ingest partition holds every event of
the ratings and cases counted under it (whatever partitioner the producers share). An ingest record keyed
otherwise, unless murmur2 happens to put its clean key in the same partition, is re-published to the ingest
topic under its clean event's key and counted when it comes back in that key's partition
(satpulse_events_out_total{stage="cleaner",kind="rekeyed"}). Workers split by stage (``--stages clean`` /
``--stages window,dead_letters``) read the clean topics back.

The stages take whole fetched batches, never single messages: a per-message Faust agent costs 41-60 µs of CPU
per message on this machine whatever its settings, a batch ~2 µs per message. streams/app.py runs them as Faust
agents over in-memory channels, fed by the task that owns the consumer. Kafka is behind
:class:`streams.broker.Broker` (default :class:`streams.kafka_broker.KafkaBroker`) and the stores come from a
:data:`streams.stores.StoreFactory` (default: ClickHouse), both injected: tests/unit/test_pipeline.py runs
this class in-process on in-memory fakes.

Every blocking ClickHouse call runs on one executor thread, one at a time (clickhouse-driver's Client is not
thread-safe); window state is only touched while holding ``self._lock``, so a rebalance waits for the batch in
flight before its partitions' state is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from domain.aggregates import published_figures
from domain.clean import Rejected, check_clean_record
from domain.entities import CaseRules, WindowKey
from domain.windows import Source, Windower
from satpulse import codec, metrics, topics
from satpulse.deadletter import Origin, encode_dead_letter
from satpulse.metrics import STAGE_LABEL
from satpulse.settings import Settings
from satpulse.stages import Stage
from sinks.clickhouse import ClickHouse, ClickHouseError, StoreNotReady
from sinks.retry import RetryStopped, retry_clickhouse
from streams.broker import Broker, Message, Record, TopicPartition
from streams.cleaner import CleanMessage, DeadLetterMessage, Routed, route
from streams.kafka_broker import KafkaBroker
from streams.stores import StoreFactory, Stores, clickhouse_stores
from streams.window_worker import BatchResult, Item, WindowResult, WindowWorker

log = logging.getLogger(__name__)
T = TypeVar("T")
Position = tuple[str, int, int]  # (topic, partition, offset)
Published = tuple[list[Item], dict[Position, bytes]]  # clean events as published, and their values by position
# the input topics of each stage; a worker runs the stages of settings.worker_stages (all by default)
STAGE_TOPICS = {Stage.CLEAN: (topics.INGEST,), Stage.WINDOW: (topics.FEEDBACK, topics.TICKETS),
                Stage.DEAD_LETTERS: (topics.DEAD_LETTER,)}
LAST_STAGE = list(Stage)[-1]  # the stage after which a batch is committed
# the last tick at a stop gives up after this: with up to 8 s for the batches in flight (streams/app.py), a stop
# while Kafka or ClickHouse is down still ends after about 10 s
STOP_TICK_SECONDS = 2.0
# stage labels of the metrics (and the stage field of the window stage's dead letters)
_CLEAN_LABEL, _WINDOW_LABEL = STAGE_LABEL[Stage.CLEAN], STAGE_LABEL[Stage.WINDOW]
_DEAD_LETTER_LABEL = STAGE_LABEL[Stage.DEAD_LETTERS]


def encode_window_result(result: WindowResult, window_seconds: int, now_ms: int) -> tuple[bytes, bytes]:
    """(key, value) of a window result for the metrics topic."""
    dimension, value, start = result.key
    record = {"window_start": start, "window_seconds": window_seconds, "dimension": dimension,
              "dimension_value": value, "is_final": result.is_final, "emitted_at": now_ms,
              **published_figures(result.agg)}  # the figures WindowAgg declares
    key = f"{dimension}|{value}|{start}|{window_seconds}".encode()
    return key, codec.encode(codec.WINDOW_METRIC, record)


@dataclass(slots=True)
class Batch:
    """One fetched batch on its way through the stages (clean -> window -> dead letters). ``done`` resolves
    once every stage wrote its outputs and its ``offsets`` were committed, or holds the first stage's
    exception (then nothing of it is committed). A stage empties what no later stage reads (the clean stage
    ``ingest``, the window stage ``clean`` and ``published``), so a batch waiting for its commit holds little."""

    ingest: list[Record]
    clean: list[Record]
    dead: list[Record]
    offsets: dict[TopicPartition, int]
    done: asyncio.Future[None]
    published: Published | None = None  # combined stages: the clean events as published, for the window stage


class Pipeline:
    """Broker, stores and window state of one worker process: :meth:`start`, then :meth:`fetch` batches and
    pass each through :meth:`step` for every :class:`Stage` in order, in fetch order (the last step commits
    it), :meth:`tick` whenever :attr:`results_due` is set or ``publish_interval_seconds`` passed; :meth:`stop`
    after. streams/app.py runs these as Faust agents and tasks."""

    def __init__(self, settings: Settings, broker: Broker | None = None,
                 stores: StoreFactory = clickhouse_stores) -> None:
        """``broker``: default a :class:`KafkaBroker` of ``settings``; ``stores``: called once by :meth:`start`
        on the ClickHouse thread (retried while it raises ClickHouseError) when the worker runs the window or
        the dead-letter stage."""
        self.settings = settings
        self.broker: Broker = broker if broker is not None else KafkaBroker(settings)
        self._store_factory = stores
        self.clean_kinds = {topics.FEEDBACK: (codec.FEEDBACK_EVENT, "feedback"),
                            topics.TICKETS: (codec.TICKET_EVENT, "ticket")}
        self.stages = set(settings.worker_stages)
        self.combined = {Stage.CLEAN, Stage.WINDOW} <= self.stages  # confirmed by start() (co-partitioned topics)
        self._stage_runs: dict[Stage, Callable[[Batch], Awaitable[None]]] = {
            Stage.CLEAN: self.clean_stage, Stage.WINDOW: self.window_stage,
            Stage.DEAD_LETTERS: self.dead_letter_stage}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        # window results are read here, off the critical path: on the window stage's thread, ticks every 0.25 s
        # took 15 % of its time in a backfill
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-reader")
        self._lock = asyncio.Lock()
        # what advances of the watermark made due (final and current windows) until a tick publishes it
        self.results_due = asyncio.Event()
        self._due: tuple[set[WindowKey], set[WindowKey]] = (set(), set())
        self._advanced_at = float("-inf")  # time.monotonic() of the last advance
        self._stores: Stores | None = None  # built by start() for the window and dead-letter stages
        self._window_worker: WindowWorker | None = None  # built by start() for the window stage
        self.started = False  # set by start() once subscribed
        self._in_flight: set[asyncio.Future[None]] = set()  # fetched batches not yet committed (or failed)
        self._targets: dict[TopicPartition, int] | None = None  # until_caught_up: end offsets to reach
        self._rekeyed = 0  # ingest records re-published under their clean key (beyond the targets)
        self._stop_requested = threading.Event()  # set by request_stop: no more batches; ClickHouse retries give up
        self._limits = settings.input_limits()

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create missing topics and build the stores (waiting while Kafka or ClickHouse is down), start the
        broker, subscribe. Raises KafkaError, RetryStopped (a stop while waiting) or MigrationRequired."""
        await self._ensure_topics()
        if self.stages & {Stage.WINDOW, Stage.DEAD_LETTERS}:
            self._stores = await self._in_executor(self._build_stores)
        await self.broker.start()
        wanted = [t for stage in sorted(self.stages) for t in STAGE_TOPICS[stage]]
        if self.combined:
            counts = {t: len(await self.broker.partitions_for(t)) for t in (topics.INGEST, *self.clean_kinds)}
            if len(set(counts.values())) > 1:
                log.warning("partition counts differ %s: clean events are read back from Kafka", counts)
                self.combined = False
            else:
                wanted = [t for t in wanted if t not in self.clean_kinds]
        if self._window_worker is not None:
            # a worker killed within rollup_interval_seconds of its last writes left their roll-ups stale: repaired
            # at the first refresh by whichever worker starts next, not only by the partition's next owner
            sources = self._sources(await self._partitions(wanted))
            await self._in_executor(self._window_worker.store.recheck_rollups, sources)
        await self.broker.subscribe(wanted, self)
        if self.settings.worker_until_caught_up:
            self._targets = await self._end_offsets(wanted)
        self.started = True

    async def stop(self) -> None:
        """Publish the window results due (a last :meth:`tick`, one attempt of at most :data:`STOP_TICK_SECONDS`:
        the window stage may have advanced the watermark after the last tick), leave the group, flush the
        producer, bring the roll-ups up to date (one attempt: what a failure leaves stale is recomputed at the next
        start), close ClickHouse; uncommitted batches are replayed by the next owner. Call once no batch is in
        flight and no tick runs."""
        if self.started and self._window_worker is not None:
            try:
                await asyncio.wait_for(self.tick(), STOP_TICK_SECONDS)
            except Exception as exc:  # Kafka or ClickHouse down, or slow: those results are not published
                log.warning("window results not published at stop: %r", exc)
        await self.broker.stop()
        stores = self._stores
        if stores is not None:
            try:
                await self._in_executor(stores.window.refresh_rollups, True)
            except ClickHouseError as exc:
                log.warning("roll-ups not refreshed at stop (recomputed at the next start): %s", exc)
        self._stop_requested.set()  # a read still waiting for ClickHouse gives up
        self._reader.shutdown(wait=True, cancel_futures=True)
        if stores is not None:  # no call is running now: close the session (chDB crashed at exit while open)
            await self._in_executor(stores.connection.close)
        self._executor.shutdown(wait=True)

    def request_stop(self) -> None:
        """Set :attr:`stopping` (fetch no more batches); a call waiting for ClickHouse gives up (RetryStopped:
        its batch is not committed and is replayed at the next start)."""
        self._stop_requested.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    # --- the commit protocol --------------------------------------------------------------------------------
    async def fetch(self) -> Batch | None:
        """The next batch split by stage, or None when nothing arrived: up to ``flush_max_rows`` records, the
        first that arrive within ``flush_max_age_seconds``, then what follows until the batch is full or that
        long has passed since the first (a quiet worker writes to ClickHouse at most about once per
        ``flush_max_age_seconds``: no "too many parts" from a trickle of tiny inserts). Blocks for at most about
        ``2 * flush_max_age_seconds``."""
        s = self.settings
        records = await self.broker.fetch(s.flush_max_rows, s.flush_max_age_seconds)
        if not records:
            return None
        ingest, clean, dead = self._by_stage(records)
        offsets = {tp: batch[-1].offset + 1 for tp, batch in records.items()}
        batch = Batch(ingest, clean, dead, offsets, asyncio.get_running_loop().create_future())
        self._in_flight.add(batch.done)
        batch.done.add_done_callback(self._in_flight.discard)
        return batch

    async def step(self, stage: Stage, batch: Batch) -> bool:
        """Run ``stage`` on ``batch`` (steps 1 and 2 of the commit protocol) unless an earlier stage failed it;
        after the last stage, (3) commit its offsets and resolve ``batch.done``. Call for every stage in order,
        and for each stage in fetch order. A stage that raises fails the batch: ``batch.done`` holds the
        exception, nothing of it is committed (a CancelledError is raised again too). Returns True when the
        batch goes on to the next stage."""
        if batch.done.done():  # failed in an earlier stage
            return False
        try:
            await self._stage_runs[stage](batch)
            if stage is LAST_STAGE:
                await self.broker.commit(batch.offsets)  # (3)
        except BaseException as exc:
            batch.done.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return False
        if stage is LAST_STAGE:
            batch.done.set_result(None)
            return False
        return True

    async def clean_stage(self, batch: Batch) -> None:
        """(1) Clean the batch's ingest records and publish the results, waiting for the acks. With combined
        stages the clean events are kept on the batch, at their published positions, for :meth:`window_stage`.
        Raises KafkaError on a failed send."""
        if not batch.ingest:
            return
        if self.combined:
            batch.published = await self._clean_and_publish(batch.ingest)
        else:
            await self._publish([(r.topic, r.key, r.value) for _, r in self._clean(batch.ingest)])
        batch.ingest = []  # no later stage reads them: freed while the batch waits for the window stage

    async def window_stage(self, batch: Batch) -> None:
        """Count the batch's clean events (published by :meth:`clean_stage`, or read back from Kafka): (1)
        publish its outputs, then (2) write it; returns once ClickHouse holds it, after advancing the watermark
        if ``publish_interval_seconds`` passed since the last advance. Holds the window-state lock, so a
        rebalance waits for it. Raises KafkaError (outputs not acknowledged) or RetryStopped (a stop while
        ClickHouse is down)."""
        async with self._lock:
            if batch.published is not None:
                await self._count(*batch.published)
            elif batch.clean:
                await self._count(*self._read_back(batch.clean))
            if self._window_worker is not None and self._advance_due():
                await self._advance()
        batch.published, batch.clean = None, []  # freed while the batch waits for its dead letters and commit

    async def dead_letter_stage(self, batch: Batch) -> None:
        """(2) Store the batch's dead-letter messages; returns once ClickHouse holds them. Raises RetryStopped
        (a stop while ClickHouse is down)."""
        if batch.dead:
            await self._in_executor(self._store_dead_letters, batch.dead)

    async def tick(self) -> None:
        """Refresh the lag gauge; with the window stage, advance the watermark unless a batch did within
        ``publish_interval_seconds``, then publish the window results due since the last tick. Call once
        :attr:`results_due` is set, or ``publish_interval_seconds`` after the last tick ended, once :meth:`start`
        returned; one tick at a time."""
        await self._update_lag()
        worker = self._window_worker
        if worker is None:
            return
        if self._advance_due():  # not due: no wait for the batch in flight
            async with self._lock:
                if self._advance_due():  # the window stage may have advanced while this waited for the lock
                    await self._advance()
        (final, current), self._due = self._due, (set(), set())
        self.results_due.clear()
        now = time.time()
        results = await self._in_executor(worker.results, final, current, now, executor=self._reader)
        now_ms = int(time.time() * 1000)
        await self._publish([(topics.METRICS, *encode_window_result(r, self.settings.window_seconds, now_ms))
                             for r in results])

    def _advance_due(self) -> bool:
        return time.monotonic() - self._advanced_at >= self.settings.publish_interval_seconds

    async def _advance(self) -> None:
        """Advance the watermark (every batch counted is written: hold the lock) and keep what it made due for
        the next tick."""
        worker = self._window_worker
        assert worker is not None  # built by start()
        final, current = await self._in_executor(worker.advance, time.time())
        self._advanced_at = time.monotonic()
        self._due[0].update(final)
        self._due[1].update(current)
        self.results_due.set()

    # --- stages ---------------------------------------------------------------------------------------------
    def _by_stage(self, batch: Mapping[TopicPartition, Sequence[Record]]
                  ) -> tuple[list[Record], list[Record], list[Record]]:
        """The batch's records as (ingest, clean events, dead letters)."""
        ingest: list[Record] = []
        clean: list[Record] = []
        dead: list[Record] = []
        for tp, records in batch.items():
            if tp.topic == topics.INGEST:
                ingest += records
            elif tp.topic in self.clean_kinds:
                clean += records
            else:
                dead += records
        return ingest, clean, dead

    def _clean(self, records: Sequence[Record]) -> list[tuple[Record, Routed]]:
        """Each ingest record with its clean event or dead letter."""
        tolerance_ms = self.settings.future_tolerance_seconds * 1000
        now_ms = int(time.time() * 1000)
        out = []
        kinds: dict[str, int] = {}
        for rec in records:
            routed = route(rec.value or b"", Origin(rec.topic, rec.partition, rec.offset), now_ms, tolerance_ms,
                           self._limits, self.settings.dead_letter_payload_max_bytes)
            if isinstance(routed, DeadLetterMessage):
                metrics.DEAD_LETTERS.labels(_CLEAN_LABEL, routed.reason).inc()
            else:
                kinds[routed.kind] = kinds.get(routed.kind, 0) + 1
            out.append((rec, routed))
        for kind, count in kinds.items():
            metrics.EVENTS_OUT.labels(_CLEAN_LABEL, kind).inc(count)
        metrics.EVENTS_IN.labels(_CLEAN_LABEL).inc(len(records))
        return out

    async def _clean_and_publish(self, records: Sequence[Record]) -> Published:
        """Combined stages: clean and (1) publish, waiting for the acks; returns the clean events as items at
        the positions the broker gave them, and their published values by position, for :meth:`_count`."""
        out: list[Message] = []
        partitions: list[int | None] = []  # where each message goes (None: by its key)
        counted: list[tuple[int, CleanMessage]] = []  # (index in out, clean event) of the events counted here
        rekeyed = 0
        for rec, routed in self._clean(records):
            if isinstance(routed, DeadLetterMessage):
                partitions.append(None)
                out.append((routed.topic, routed.key, routed.value))
            elif routed.key != rec.key and await self.broker.partition(topics.INGEST, routed.key) != rec.partition:
                partitions.append(None)
                out.append((topics.INGEST, routed.key, rec.value or b""))  # counted where it comes back
                rekeyed += 1
            else:
                counted.append((len(out), routed))
                partitions.append(rec.partition)  # = its key's partition: no second murmur2
                out.append((routed.topic, routed.key, routed.value))
        if rekeyed:
            metrics.EVENTS_OUT.labels(_CLEAN_LABEL, "rekeyed").inc(rekeyed)
            self._rekeyed += rekeyed
        positions = await self._publish(out, partitions)
        items, values = [], {}
        for index, routed in counted:
            position = (routed.topic, *positions[index])
            items.append(Item(*position, routed.kind, routed.record))
            values[position] = routed.value
        return items, values

    def _read_back(self, records: Sequence[Record]) -> tuple[list[Item], dict[Position, bytes], list[Message]]:
        """Separate stages: decode and check the clean events read back from Kafka. Returns the items to
        count, every record's value by position, and dead letters for what does not decode or breaks the
        clean rules (any producer can write there)."""
        items, rejected = [], []
        now_ms = int(time.time() * 1000)
        for rec in records:
            schema, kind = self.clean_kinds[rec.topic]
            try:
                record = codec.decode(rec.value or b"", schema)[1]
                check_clean_record(record, self._limits)
            except (codec.DecodeError, Rejected) as exc:
                reason = exc.reason if isinstance(exc, Rejected) else "unparseable_payload"
                rejected.append(self._dead_letter(reason, str(exc), rec.value or b"",
                                                  Origin(rec.topic, rec.partition, rec.offset), now_ms))
                continue
            items.append(Item(rec.topic, rec.partition, rec.offset, kind, record))
        return items, {(r.topic, r.partition, r.offset): r.value or b"" for r in records}, rejected

    async def _count(self, items: Sequence[Item], values: dict[Position, bytes], rejected: Sequence[Message] = ()
                     ) -> None:
        """The window stage proper, one exactly-once unit: fold the batch, (1) publish its late events and dead
        letters (with ``rejected``, dead letters found before folding) and wait for the acks, then (2) write it
        to ClickHouse; returns once ClickHouse holds it. A crash before the write replays the batch and
        publishes those outputs again (same keys: the dead-letter table keeps one row per origin); after the
        write the batch is a replay and nothing is folded or published again. ``values``: each item's clean
        event as published, by position."""
        metrics.EVENTS_IN.labels(_WINDOW_LABEL).inc(len(items))
        worker = self._window_worker
        assert worker is not None  # built by start()
        result = await self._in_executor(worker.fold, items, time.time())
        await self._publish([*rejected, *self._window_outputs(result, values)])  # (1)
        await self._in_executor(worker.persist, items, result)  # (2)

    def _window_outputs(self, result: BatchResult, values: dict[Position, bytes]) -> list[Message]:
        """Late events (to the late topic) and dead letters of a folded batch."""
        now_ms = int(time.time() * 1000)
        out: list[Message] = []
        for item in result.late:
            value = values[(item.topic, item.partition, item.offset)]
            out.append((topics.LATE, item.record["event_id"].encode(), value))
        for q in result.quarantined:
            position = (q.item.topic, q.item.partition, q.item.offset)
            out.append(self._dead_letter(q.reason, q.detail, values[position], Origin(*position), now_ms))
        return out

    def _dead_letter(self, reason: str, detail: str, payload: bytes, origin: Origin, now_ms: int) -> Message:
        """A window-stage dead letter, counted."""
        metrics.DEAD_LETTERS.labels(_WINDOW_LABEL, reason).inc()
        key, value = encode_dead_letter(reason, detail, _WINDOW_LABEL, payload, origin, now_ms,
                                        self.settings.dead_letter_payload_max_bytes)
        return topics.DEAD_LETTER, key, value

    def _store_dead_letters(self, records: Sequence[Record]) -> None:
        """(2) Blocks (retrying with back-off) until ClickHouse accepted the batch. Runs on the executor."""
        assert self._stores is not None  # built by start()
        store = self._stores.dead_letters
        for rec in records:
            store.add(rec.value or b"", rec.topic, rec.partition, rec.offset)
        retry_clickhouse("dead-letter write", store.flush, stopping=self._stop_requested)
        metrics.EVENTS_IN.labels(_DEAD_LETTER_LABEL).inc(len(records))
        metrics.EVENTS_OUT.labels(_DEAD_LETTER_LABEL, "dead_letter").inc(len(records))

    # --- plumbing -------------------------------------------------------------------------------------------
    def _build_stores(self) -> Stores:
        """The stores from the factory and, with the window stage, the window worker on them. Blocks while
        ClickHouse is down (RetryStopped on a stop). Runs on the executor."""
        s = self.settings
        stores = retry_clickhouse("connect", lambda: self._store_factory(s), stopping=self._stop_requested)
        if Stage.WINDOW in self.stages:
            windower = Windower(s.window_seconds, s.grace_seconds, s.idle_seconds, s.entity_horizon_seconds)
            rules = CaseRules(s.sla_first_response_seconds, s.sla_resolution_seconds, s.max_duration_seconds * 1000)
            self._window_worker = WindowWorker(windower, stores.window, s.dimensions, rules,
                                               rolling_interval_seconds=s.rolling_refresh_seconds,
                                               max_entities_per_source=s.entity_cache_per_partition,
                                               stopping=self._stop_requested)
        return stores

    async def caught_up(self) -> bool:
        """With ``worker_until_caught_up``: True once no batch is in flight and the group's committed offset of
        every input partition reached its end offset at start (so every batch up to there is stored). Records
        this worker re-published to the ingest topic meanwhile move the targets to the current end offsets.
        Always False without the setting. Asks the broker: call when idle."""
        if self._targets is None or self._in_flight:
            return False
        if self._rekeyed:
            self._rekeyed = 0
            self._targets = await self._end_offsets(sorted({tp.topic for tp in self._targets}))
            return False
        for tp, target in self._targets.items():
            committed = await self.broker.committed(tp)
            if target > (committed or 0):
                return False
        return True

    async def _end_offsets(self, topic_names: Sequence[str]) -> dict[TopicPartition, int]:
        return await self.broker.end_offsets(await self._partitions(topic_names))

    async def _partitions(self, topic_names: Sequence[str]) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in topic_names for p in await self.broker.partitions_for(t)]

    async def read_store(self, read: Callable[[ClickHouse], T]) -> T:
        """``read(ch)`` with the worker's ClickHouse connection, on the thread that reads window results (for
        pages served by the worker: embedded chDB admits one process). Only reads. Raises ClickHouseError, or
        StoreNotReady before the connection exists."""
        stores = self._stores
        if stores is None:
            raise StoreNotReady("the worker has not connected to ClickHouse yet")
        result: T = await self._in_executor(read, stores.connection, executor=self._reader)
        return result

    async def _ensure_topics(self) -> None:
        """Create the topics that do not exist yet (before subscribing: a group that subscribes to a topic
        auto-created mid-rebalance is assigned nothing until a metadata refresh), retrying with back-off while
        Kafka is unreachable. Raises RetryStopped on a stop."""
        delay = 1.0
        while True:
            try:
                await self.broker.ensure_topics()
                return
            except Exception as exc:  # kafka.errors.KafkaError, NoBrokersAvailable, socket errors
                log.warning("Kafka not ready (%s); retrying in %.0f s", exc, delay)
            if await self._stopped_within(delay):
                raise RetryStopped("stopped while waiting for Kafka")
            delay = min(delay * 2, 30.0)

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep ``seconds``, less if a stop is requested meanwhile; True when it was."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stopping:
            await asyncio.sleep(min(0.2, seconds))
        return self.stopping

    async def _in_executor(self, fn: Any, *args: Any, executor: ThreadPoolExecutor | None = None) -> Any:
        """``fn(*args)`` on ``executor`` (default: the window stage's thread)."""
        return await asyncio.get_running_loop().run_in_executor(executor or self._executor, fn, *args)

    async def _publish(self, messages: Sequence[Message], partitions: Sequence[int | None] = ()
                       ) -> list[tuple[int, int]]:
        """(1) :meth:`Broker.publish`: returns once the broker acknowledged every message."""
        return await self.broker.publish(messages, partitions) if messages else []

    async def _update_lag(self) -> None:
        """satpulse_consumer_lag_messages per topic: summed over the assigned partitions whose end is known."""
        lag = dict.fromkeys((topics.INGEST, *self.clean_kinds, topics.DEAD_LETTER), 0)
        for tp, messages in (await self.broker.lag()).items():
            if tp.topic in lag:
                lag[tp.topic] += messages
        for topic, messages in lag.items():
            metrics.CONSUMER_LAG.labels(topic).set(messages)

    def _sources(self, partitions: Iterable[TopicPartition]) -> list[Source]:
        """The window stage's sources behind consumed partitions: a clean topic's partition, or with combined
        stages both clean topics' partitions of the ingest partition's number."""
        if self.combined:
            return [(topic, tp.partition) for tp in partitions if tp.topic == topics.INGEST
                    for topic in self.clean_kinds]
        return [(tp.topic, tp.partition) for tp in partitions if tp.topic in self.clean_kinds]

    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """New partitions hold the watermark back until they show data or go idle."""
        sources = self._sources(partitions)
        async with self._lock:
            if self._window_worker is not None:
                self._window_worker.windower.assign(sources, time.time())
                # on the store's thread: a refresh running there would forget a recheck made meanwhile
                await self._in_executor(self._window_worker.store.recheck_rollups, sources)

    async def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Waits until the batches in flight are committed (or failed), then forgets the partitions' window
        state."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        sources = self._sources(partitions)
        async with self._lock:
            if self._window_worker is not None:
                self._window_worker.windower.revoke(sources)
