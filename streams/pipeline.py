"""The worker's hot path: one Kafka consumer takes batches of every input topic through three thin stages
around pure functions, and commits a batch's offsets only after its writes were acknowledged.

- clean: raw JSON submissions (ingest topic) -> clean feedback / ticket events (Avro) or dead letters
  (:func:`streams.cleaner.route`); committed once the broker acknowledged every produced message (acks=all).
- window: clean events -> per-source window cells and clean events in ClickHouse (:class:`WindowWorker`);
  committed once ClickHouse accepted them. Late events go to the late topic, quarantined durations to the
  dead-letter topic. While ClickHouse is down the batch waits (retrying with back-off) and nothing more is
  fetched beyond aiokafka's bounded prefetch: that is the back-pressure.
- dead letters: dead-letter topic -> table ``dead_letters``; committed once ClickHouse accepted them.
- every ``publish_interval_seconds``: advance the watermark (between two batches), then read the window results
  (current and final) from ClickHouse on a second thread while the next batch is counted, and publish them to
  the metrics topic.

A worker that runs both the clean and the window stage counts the events it cleaned without reading them back
from Kafka ("combined": no second batch wait, no Avro decode). It subscribes to the ingest topic only; a clean
event is published to the partition of the ingest record it came from, at the offset the broker acknowledged,
and counted under that position exactly as if it had been consumed. That needs co-partitioned topics: ingest,
feedback and tickets with the same partition count (checked at start; otherwise the worker reads the clean
topics back), and an ingest record keyed by the key of its clean event (:func:`streams.clean.entity_key`, as
every adapter does), so that one ingest partition holds every event of the ratings and cases counted under
it (whatever partitioner the producers share). An ingest record keyed otherwise, unless murmur2 happens to put
its clean key in the same partition, is re-published to the ingest topic under its clean event's key and
counted when it comes back in that key's partition (satpulse_events_out_total{stage="cleaner",kind="rekeyed"}).
Workers split by stage (``--stages clean`` / ``--stages window,dead_letters``) read the clean topics back.

The stages take whole fetched batches, never single messages: a per-message Faust agent costs 41-60 µs of CPU
per message on this machine whatever its settings, a batch ~2 µs per message. streams/app.py runs them as Faust
agents over in-memory channels, fed by the task that owns this consumer.

Every blocking ClickHouse call runs on one executor thread, one at a time (clickhouse-driver's Client is not
thread-safe); window state is only touched while holding ``self._lock``, so a rebalance waits for the batch in
flight before its partitions' state is dropped. A crash at any point replays from the last commit: the window
stage skips offsets already in the store, a clean event cleaned and published again (new offset) leaves its
rating or case unchanged (both folds ignore a repeated event id), and the dead-letter table replaces rows by
origin, so nothing counts twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.partitioner import DefaultPartitioner

from adapters.publisher import ensure_topics
from satpulse import codec, metrics, topics
from satpulse.deadletter import Origin, encode_dead_letter
from satpulse.record_batches import send_in_batches
from satpulse.settings import Settings
from sinks.clickhouse import ClickHouse, ClickHouseError, connect
from sinks.dead_letter_store import DeadLetterStore
from sinks.migrations import migrate
from sinks.retry import RetryStopped
from sinks.window_store import WindowStore
from streams.clean import Rejected, check_clean_record
from streams.cleaner import Routed, route
from streams.entities import CaseRules
from streams.window_worker import BatchResult, Item, WindowResult, WindowWorker, retry_clickhouse
from streams.windows import Source, Windower

log = logging.getLogger(__name__)
T = TypeVar("T")
Message = tuple[str, bytes, bytes]  # (topic, key, value)
Position = tuple[str, int, int]  # (topic, partition, offset)
Published = tuple[list[Item], dict[Position, bytes]]  # clean events as published, and their values by position
# the input topics of each stage; a worker runs the stages of settings.worker_stages (all by default)
STAGE_TOPICS = {"clean": (topics.INGEST,), "window": (topics.FEEDBACK, topics.TICKETS),
                "dead_letters": (topics.DEAD_LETTER,)}


def encode_window_result(result: WindowResult, window_seconds: int, now_ms: int) -> tuple[bytes, bytes]:
    """(key, value) of a window result for the metrics topic."""
    dimension, value, start = result.key
    agg = result.agg
    record = {
        "window_start": start, "window_seconds": window_seconds, "dimension": dimension,
        "dimension_value": value, "rated": agg.rated, "satisfied": agg.satisfied, "scored": agg.scored,
        "score_sum": agg.score_micros / 1_000_000, "csat_percent": agg.csat_percent,
        "average_score": agg.average_score, "is_final": result.is_final, "emitted_at": now_ms,
        "created": agg.created, "reopened": agg.reopened, "first_responses": agg.first_responses,
        "first_response_mean_seconds": agg.mean_first_response_seconds,
        "first_response_breaches": agg.first_response_breaches, "resolved": agg.resolved,
        "resolution_mean_seconds": agg.mean_resolution_seconds, "resolution_breaches": agg.resolution_breaches,
    }
    for q in (50, 90, 99):
        record[f"first_response_p{q}_seconds"] = agg.first_response_quantile_seconds(q / 100)
        record[f"resolution_p{q}_seconds"] = agg.resolution_quantile_seconds(q / 100)
    key = f"{dimension}|{value}|{start}|{window_seconds}".encode()
    return key, codec.encode(codec.WINDOW_METRIC, record)


class StoreNotReady(RuntimeError):
    """The worker has not connected to ClickHouse yet (start-up), or runs no stage that does."""


@dataclass(slots=True)
class Batch:
    """One fetched batch on its way through the stages (clean -> window -> dead letters). ``done`` resolves
    once every stage wrote its outputs (then its ``offsets`` may be committed), or holds the first stage's
    exception (then nothing of it may be committed)."""

    ingest: list[Any]
    clean: list[Any]
    dead: list[Any]
    offsets: dict[TopicPartition, int]
    done: asyncio.Future[None]
    published: Published | None = None  # combined stages: the clean events as published, for the window stage


class Pipeline:
    """Consumer, producer and window state of one worker process: :meth:`start`, then :meth:`fetch` batches and
    pass each through :meth:`clean_stage`, :meth:`window_stage` and :meth:`dead_letter_stage` in fetch order,
    :meth:`commit` it once they are done, :meth:`tick` every ``publish_interval_seconds``; :meth:`stop` after.
    streams/app.py runs these as Faust agents and tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clean_kinds = {topics.FEEDBACK: (codec.FEEDBACK_EVENT, "feedback"),
                            topics.TICKETS: (codec.TICKET_EVENT, "ticket")}
        self.stages = set(settings.worker_stages)
        if not self.stages or self.stages - STAGE_TOPICS.keys():
            raise ValueError(f"worker_stages must be a non-empty subset of {sorted(STAGE_TOPICS)}")
        self.combined = {"clean", "window"} <= self.stages  # confirmed by start() (co-partitioned topics)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        # window results are read here, off the critical path: on the window stage's thread, ticks every 0.25 s
        # took 15 % of its time in a backfill
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-reader")
        self._lock = asyncio.Lock()
        self._window_worker: WindowWorker | None = None
        self._dead_letters: DeadLetterStore | None = None
        self.started = False  # set by start() once subscribed
        self._in_flight: set[asyncio.Future[None]] = set()  # fetched batches not yet committed (or failed)
        self._targets: dict[TopicPartition, int] | None = None  # until_caught_up: end offsets to reach
        self._rekeyed = 0  # ingest records re-published under their clean key (beyond the targets)
        self._stop_requested = threading.Event()  # set by request_stop: no more batches; ClickHouse retries give up
        self._limits = settings.input_limits()
        self._partitions: dict[str, list[int]] = {}  # partitions of each topic published to
        self._partitioner = DefaultPartitioner()  # murmur2 of the key, as Kafka's Java clients
        self.consumer: AIOKafkaConsumer  # both created by start(), inside the running loop
        self.producer: AIOKafkaProducer

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create missing topics and connect ClickHouse (waiting while Kafka or ClickHouse is down), start the
        producer, subscribe. Raises KafkaError, RetryStopped (a stop while waiting) or MigrationRequired."""
        s = self.settings
        await self._ensure_topics()
        if self.stages & {"window", "dead_letters"}:
            await self._in_executor(self._get_window_worker)
        # the consumer group is the worker id: workers sharing it share the partitions
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=s.worker_id, client_id=s.worker_id,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=s.flush_max_rows,
            fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=100,  # the broker answers a fetch after at most 100 ms (default 500: latency)
            metadata_max_age_ms=30_000)  # partitions added to a topic are picked up within 30 s
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, client_id=s.worker_id, acks="all", enable_idempotence=True,
            linger_ms=5, max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)
        await self.producer.start()
        await self.consumer.start()
        wanted = [t for stage in sorted(self.stages) for t in STAGE_TOPICS[stage]]
        # subscribe only once the broker's metadata lists every topic: a group joined before that is assigned
        # nothing until the next metadata refresh (minutes) notices them (seen on a freshly started broker)
        while not set(wanted) <= await self.consumer.topics():
            log.info("waiting for topics %s in the broker's metadata", wanted)
            await asyncio.sleep(0.5)
        if self.combined:
            # the producer's view: it fetches a topic's metadata on demand (the consumer's knows only subscriptions)
            counts = {t: len(await self.producer.partitions_for(t)) for t in (topics.INGEST, *self.clean_kinds)}
            if len(set(counts.values())) > 1:
                log.warning("partition counts differ %s: clean events are read back from Kafka", counts)
                self.combined = False
            else:
                wanted = [t for t in wanted if t not in self.clean_kinds]
        self.consumer.subscribe(wanted, listener=_Rebalance(self))
        if s.worker_until_caught_up:
            self._targets = await self._end_offsets(wanted)
        self.started = True

    async def stop(self) -> None:
        """Leave the group, flush the producer, bring the roll-ups up to date (one attempt: what a failure leaves
        stale is recomputed at the next start), close ClickHouse; uncommitted batches are replayed by the next
        owner."""
        for client in (getattr(self, "consumer", None), getattr(self, "producer", None)):  # None: stopped while
            if client is not None:                                                       # still starting
                await client.stop()
        worker = self._window_worker
        if worker is not None:
            try:
                await self._in_executor(worker.store.refresh_rollups, True)
            except ClickHouseError as exc:
                log.warning("roll-ups not refreshed at stop (recomputed at the next start): %s", exc)
        self._stop_requested.set()  # a read still waiting for ClickHouse gives up
        self._reader.shutdown(wait=True, cancel_futures=True)
        if worker is not None:  # no call is running now: close the session (chDB crashed at exit while open)
            await self._in_executor(worker.store.ch.close)
        self._executor.shutdown(wait=True)

    def request_stop(self) -> None:
        """Set :attr:`stopping` (fetch no more batches); a call waiting for ClickHouse gives up (RetryStopped:
        its batch is not committed and is replayed at the next start)."""
        self._stop_requested.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def fetch(self) -> Batch | None:
        """The next batch (:meth:`_take_batch`) split by stage, or None when nothing arrived. Blocks for at most
        about ``2 * flush_max_age_seconds``."""
        records = await self._take_batch()
        if not records:
            return None
        ingest, clean, dead = self._by_stage(records)
        offsets = {tp: batch[-1].offset + 1 for tp, batch in records.items()}
        batch = Batch(ingest, clean, dead, offsets, asyncio.get_running_loop().create_future())
        self._in_flight.add(batch.done)
        batch.done.add_done_callback(self._in_flight.discard)
        return batch

    async def clean_stage(self, batch: Batch) -> None:
        """Clean the batch's ingest records and publish the results, waiting for the acks. With combined
        stages the clean events are kept on the batch, at their published positions, for :meth:`window_stage`.
        Raises KafkaError on a failed send."""
        if not batch.ingest:
            return
        if self.combined:
            batch.published = await self._clean_and_publish(batch.ingest)
        else:
            await self._publish([(r.topic, r.key, r.value) for _, r in self._clean(batch.ingest)])

    async def window_stage(self, batch: Batch) -> None:
        """Count the batch's clean events (published by :meth:`clean_stage`, or read back from Kafka) and
        write them; returns once ClickHouse holds them. Holds the window-state lock, so a rebalance waits for
        it. Raises KafkaError (outputs not acknowledged) or RetryStopped (a stop while ClickHouse is down)."""
        async with self._lock:
            if batch.published is not None:
                await self._count(*batch.published)
            elif batch.clean:
                await self._publish(await self._window(batch.clean))

    async def dead_letter_stage(self, batch: Batch) -> None:
        """Store the batch's dead-letter messages; returns once ClickHouse holds them."""
        if batch.dead:
            await self._in_executor(self._store_dead_letters, batch.dead)

    async def commit(self, batch: Batch) -> None:
        """Commit the batch's offsets: call once its stages are done, in fetch order."""
        await self._commit(batch.offsets)

    async def _take_batch(self) -> dict[TopicPartition, list[Any]]:
        """Up to ``flush_max_rows`` records: the first that arrive within ``flush_max_age_seconds``, then what
        follows until the batch is full or that long has passed since the first. A busy worker gets full batches
        at once; a quiet one writes to ClickHouse at most about once per ``flush_max_age_seconds`` (no "too many
        parts" from a trickle of tiny inserts)."""
        limit, wait = self.settings.flush_max_rows, self.settings.flush_max_age_seconds
        batch: dict[TopicPartition, list[Any]] = await self.consumer.getmany(timeout_ms=int(wait * 1000),
                                                                              max_records=limit)
        count = sum(len(records) for records in batch.values())
        deadline = time.monotonic() + wait
        while batch and count < limit and (left := deadline - time.monotonic()) > 0:
            more = await self.consumer.getmany(timeout_ms=int(left * 1000), max_records=limit - count)
            for tp, records in more.items():
                batch[tp] = batch.get(tp, []) + records
                count += len(records)
        return batch

    async def tick(self) -> None:
        """Refresh the lag gauge; with the window stage, advance the watermark and publish window results. Call
        every ``publish_interval_seconds`` once :meth:`start` returned."""
        await self._update_lag()
        if "window" not in self.stages or self._window_worker is None:
            return
        worker = self._window_worker
        now = time.time()
        async with self._lock:
            final, current = await self._in_executor(worker.advance, now)
        results = await self._in_executor(worker.results, final, current, now, executor=self._reader)
        now_ms = int(time.time() * 1000)
        await self._publish([(topics.METRICS, *encode_window_result(r, self.settings.window_seconds, now_ms))
                             for r in results])

    # --- stages ---------------------------------------------------------------------------------------------
    def _by_stage(self, batch: dict[TopicPartition, list[Any]]) -> tuple[list[Any], list[Any], list[Any]]:
        """The batch's records as (ingest, clean events, dead letters)."""
        ingest, clean, dead = [], [], []
        for tp, records in batch.items():
            if tp.topic == topics.INGEST:
                ingest += records
            elif tp.topic in self.clean_kinds:
                clean += records
            else:
                dead += records
        return ingest, clean, dead

    def _clean(self, records: Sequence[Any]) -> list[tuple[Any, Routed]]:
        """Each ingest record with its clean event or dead letter."""
        tolerance_ms = self.settings.future_tolerance_seconds * 1000
        now_ms = int(time.time() * 1000)
        out = []
        kinds: dict[str, int] = {}
        for rec in records:
            routed = route(rec.value or b"", Origin(rec.topic, rec.partition, rec.offset), now_ms, tolerance_ms,
                           self._limits, self.settings.dead_letter_payload_max_bytes)
            if routed.reason is not None:
                metrics.DEAD_LETTERS.labels("cleaner", routed.reason).inc()
            else:
                kinds[routed.kind or ""] = kinds.get(routed.kind or "", 0) + 1
            out.append((rec, routed))
        for kind, count in kinds.items():
            metrics.EVENTS_OUT.labels("cleaner", kind).inc(count)
        metrics.EVENTS_IN.labels("cleaner").inc(len(records))
        return out

    async def _clean_and_publish(self, records: Sequence[Any]) -> Published:
        """Combined stages: clean and publish (waiting for the acks); returns the clean events as items at the
        positions the broker gave them, and their published values by position, for :meth:`_count`."""
        out: list[Message] = []
        partitions: list[int | None] = []  # where each message goes (None: by its key)
        counted: list[tuple[int, Routed]] = []  # (index in out, clean event) of the events counted here
        rekeyed = 0
        for rec, routed in self._clean(records):
            if routed.kind is None:  # a dead letter
                partitions.append(None)
                out.append((routed.topic, routed.key, routed.value))
            elif routed.key != rec.key and await self._partition(topics.INGEST, routed.key) != rec.partition:
                partitions.append(None)
                out.append((topics.INGEST, routed.key, rec.value or b""))  # counted where it comes back
                rekeyed += 1
            else:
                counted.append((len(out), routed))
                partitions.append(rec.partition)  # = its key's partition: no second murmur2
                out.append((routed.topic, routed.key, routed.value))
        if rekeyed:
            metrics.EVENTS_OUT.labels("cleaner", "rekeyed").inc(rekeyed)
            self._rekeyed += rekeyed
        positions = await self._publish(out, partitions)
        items, values = [], {}
        for index, routed in counted:
            assert routed.kind is not None and routed.record is not None  # a clean event
            position = (routed.topic, *positions[index])
            items.append(Item(*position, routed.kind, routed.record))
            values[position] = routed.value
        return items, values

    async def _window(self, records: Sequence[Any]) -> list[Message]:
        """Separate stages: decode and check the clean events read back from Kafka (any producer can write
        there: what does not decode or breaks the clean rules is dead-lettered), then count them."""
        items, out = [], []
        now_ms = int(time.time() * 1000)
        for rec in records:
            schema, kind = self.clean_kinds[rec.topic]
            try:
                record = codec.decode(rec.value or b"", schema)[1]
                check_clean_record(record, self._limits)
            except (codec.DecodeError, Rejected) as exc:
                reason = exc.reason if isinstance(exc, Rejected) else "unparseable_payload"
                out.append(self._dead_letter(reason, str(exc), rec.value or b"",
                                             Origin(rec.topic, rec.partition, rec.offset), now_ms))
                continue
            items.append(Item(rec.topic, rec.partition, rec.offset, kind, record))
        await self._count(items, {(r.topic, r.partition, r.offset): r.value or b"" for r in records})
        return out

    async def _count(self, items: Sequence[Item], values: dict[Position, bytes]) -> None:
        """The window stage proper, one exactly-once unit: fold the batch, publish its late events and dead
        letters (waiting for the acks), then write it to ClickHouse; returns once ClickHouse holds it. A crash
        before the write replays the batch and publishes those outputs again (same keys: the dead-letter table
        keeps one row per origin); after the write the batch is a replay and nothing is folded or published
        again. ``values``: each item's clean event as published, by position."""
        metrics.EVENTS_IN.labels("window").inc(len(items))
        worker = self._window_worker
        assert worker is not None  # built by start()
        result = await self._in_executor(worker.fold, items, time.time())
        await self._publish(self._window_outputs(result, values))
        await self._in_executor(worker.persist, items, result)

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
        metrics.DEAD_LETTERS.labels("window", reason).inc()
        key, value = encode_dead_letter(reason, detail, "window", payload, origin, now_ms,
                                        self.settings.dead_letter_payload_max_bytes)
        return topics.DEAD_LETTER, key, value

    def _store_dead_letters(self, records: Sequence[Any]) -> None:
        """Blocks (retrying with back-off) until ClickHouse accepted the batch. Runs on the executor."""
        if self._dead_letters is None:
            self._dead_letters = DeadLetterStore(self._get_window_worker().store.ch)
        store = self._dead_letters
        for rec in records:
            store.add(rec.value or b"", rec.topic, rec.partition, rec.offset)
        retry_clickhouse("dead-letter write", store.flush, stopping=self._stop_requested)
        metrics.EVENTS_IN.labels("dead_letter_sink").inc(len(records))
        metrics.EVENTS_OUT.labels("dead_letter_sink", "dead_letter").inc(len(records))

    # --- plumbing -------------------------------------------------------------------------------------------
    def _get_window_worker(self) -> WindowWorker:
        """Built on the executor thread on first use: connects and migrates, waiting while ClickHouse is down."""
        if self._window_worker is None:
            s = self.settings

            def connect_and_migrate() -> ClickHouse:
                ch = connect(s.clickhouse_url.get_secret_value(), s.clickhouse_cluster, s.clickhouse_insert_quorum)
                migrate(ch)
                return ch

            ch = retry_clickhouse("connect", connect_and_migrate, stopping=self._stop_requested)
            windower = Windower(s.window_seconds, s.grace_seconds, s.idle_seconds, s.entity_horizon_seconds)
            rules = CaseRules(s.sla_first_response_seconds, s.sla_resolution_seconds, s.max_duration_seconds * 1000)
            store = WindowStore(ch, topics.FEEDBACK, topics.TICKETS, s.window_seconds, s.rollup_window_seconds,
                                s.rollup_interval_seconds)
            self._window_worker = WindowWorker(windower, store, s.dimensions, rules,
                                               rolling_interval_seconds=s.rolling_refresh_seconds,
                                               max_entities_per_source=s.entity_cache_per_partition,
                                               stopping=self._stop_requested)
        return self._window_worker

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
            committed = await self.consumer.committed(tp)
            if target > (committed or 0):
                return False
        return True

    async def _end_offsets(self, topic_names: Sequence[str]) -> dict[TopicPartition, int]:
        partitions = [TopicPartition(t, p) for t in topic_names for p in sorted(await self.producer.partitions_for(t))]
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(partitions)
        return ends

    async def read_store(self, read: Callable[[ClickHouse], T]) -> T:
        """``read(ch)`` with the worker's ClickHouse connection, on the thread that reads window results (for
        pages served by the worker: embedded chDB admits one process). Only reads. Raises ClickHouseError, or
        StoreNotReady before the connection exists."""
        worker = self._window_worker
        if worker is None:
            raise StoreNotReady("the worker has not connected to ClickHouse yet")
        result: T = await self._in_executor(read, worker.store.ch, executor=self._reader)
        return result

    async def _ensure_topics(self) -> None:
        """Create the topics that do not exist yet (before subscribing: a group that subscribes to a topic
        auto-created mid-rebalance is assigned nothing until a metadata refresh), retrying with back-off while
        Kafka is unreachable. Raises RetryStopped on a stop."""
        delay = 1.0
        while True:
            try:
                await asyncio.get_running_loop().run_in_executor(None, ensure_topics, self.settings)
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

    async def _partition(self, topic: str, key: bytes) -> int:
        """The partition ``producer.send`` would choose for ``key`` (murmur2, as Kafka's Java clients)."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return int(self._partitioner(key, partitions, partitions))

    async def _publish(self, messages: Sequence[Message], partitions: Sequence[int | None] = ()
                       ) -> list[tuple[int, int]]:
        """Send and wait until the broker acknowledged every message; returns each message's (partition, offset).
        Raises KafkaError on a failed send. Messages are partitioned by key as ``producer.send`` would (unless
        ``partitions`` gives the partition that key maps to), then sent as record batches per partition."""
        by_partition: dict[tuple[str, int], list[int]] = {}
        for index, (topic, key, _) in enumerate(messages):
            partition = partitions[index] if partitions else None
            if partition is None:
                partition = await self._partition(topic, key)
            by_partition.setdefault((topic, partition), []).append(index)
        sent = []  # (partition, indexes of the batch's messages, future of its RecordMetadata)
        for (topic, partition), indexes in by_partition.items():
            start = 0
            for count, future in await send_in_batches(self.producer, topic, partition,
                                                       (messages[i][1:] for i in indexes)):
                sent.append((partition, indexes[start:start + count], future))
                start += count
        positions = [(-1, -1)] * len(messages)
        for partition, held, future in sent:
            base = (await future).offset  # a batch's records get consecutive offsets from its base offset
            for i, index in enumerate(held):
                positions[index] = (partition, base + i)
        return positions

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit; a commit refused because a rebalance took the partitions is logged, not raised: the new
        owner replays from the previous commit, which the stages make idempotent."""
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit refused after a rebalance (the batch will be replayed): %s", exc)

    async def _update_lag(self) -> None:
        """satpulse_consumer_lag_messages per topic: highwater minus the next offset to process, summed over
        the assigned partitions whose highwater is known (fetched at least once)."""
        lag = dict.fromkeys((topics.INGEST, *self.clean_kinds, topics.DEAD_LETTER), 0)
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None and tp.topic in lag:
                lag[tp.topic] += max(0, high - await self.consumer.position(tp))
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
                self._window_worker.store.recheck_rollups(sources)

    async def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Waits until the batches in flight are committed (or failed), then forgets the partitions' window
        state."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        sources = self._sources(partitions)
        async with self._lock:
            if self._window_worker is not None:
                self._window_worker.windower.revoke(sources)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.pipeline.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.pipeline.assign(assigned)

