"""In-memory stand-ins for the worker's broker and stores, faithful to the semantics the pipeline relies on, so
that :class:`streams.pipeline.Pipeline` runs in-process (tests/unit/test_pipeline.py).

- :class:`MemoryKafka` is the cluster: topics with partitions (append-only logs of (key, value)), each consumer
  group's committed offsets, murmur2 partitioning as Kafka's clients do. It outlives the workers: a worker that
  crashed is replaced by a new :class:`MemoryBroker` (a new group member) on the same cluster.
- :class:`MemoryWindowStore` has ClickHouse's semantics: ``window_cells`` is a ReplacingMergeTree by version
  (the latest version of a (source, cell) row wins), events are appended (every copy, as before a merge).
- :class:`MemoryDeadLetterStore` keeps one row per origin, stage and reason (the table's ReplacingMergeTree).

Failures are injected with :class:`Faults`, one shared object whose counters say how many calls of each kind
fail next; every publish, write and commit is also recorded, in order, in its ``journal``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from domain.aggregates import WindowAgg
from domain.entities import RatingState, WindowKey, newer_rating, rating_state
from domain.store import StoredEvent
from domain.windows import CellRow, Source
from satpulse import codec, topics
from satpulse.settings import Settings
from streams.broker import Message, RebalanceListener, TopicPartition
from streams.stores import StoreFactory, Stores


class Crash(Exception):
    """An injected failure: the worker process dies here (nothing after it happens)."""


@dataclass
class Faults:
    """How many of the next calls of each kind fail, and the order of what happened. ``publish`` fails
    before the acks: with ``publish_appends`` the messages are appended first (the broker got them, the ack
    was lost), else none is. ``write`` (window store) and ``dead_letter_write`` fail before anything is stored,
    raising ``write_error`` (Crash by default; ClickHouseError is what the worker retries). ``commit`` fails
    before the offsets are stored. With ``write_stores_events`` a failing ``write`` stores the clean events
    first and fails before the cells (the process died between the two inserts)."""

    publish: int = 0
    publish_appends: bool = False
    write: int = 0
    write_error: type[Exception] = Crash
    write_stores_events: bool = False
    dead_letter_write: int = 0  # as write, for the dead-letter store
    commit: int = 0
    # "publish {topics}", "write", "dead-letter write", "commit"
    journal: list[str] = field(default_factory=list)

    def take(self, kind: str) -> bool:
        """True (and one fewer to come) when the next call of ``kind`` fails."""
        left: int = getattr(self, kind)
        if left:
            setattr(self, kind, left - 1)
        return bool(left)


@dataclass(frozen=True, slots=True)
class FakeRecord:
    """A fetched record (what aiokafka's ConsumerRecord carries for the pipeline)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class MemoryKafka:
    """The cluster: topics, their partitions' logs and the groups' committed offsets."""

    def __init__(self, partitions: int = 4, faults: Faults | None = None) -> None:
        """``partitions``: of every topic created by :meth:`create` without a count."""
        self.default_partitions = partitions
        self.faults = faults or Faults()
        self.logs: dict[str, list[list[tuple[bytes | None, bytes]]]] = {}
        self.committed: dict[str, dict[TopicPartition, int]] = {}  # group -> next offsets
        self._partitioner = DefaultPartitioner()

    def create(self, topic: str, partitions: int | None = None) -> None:
        """Create ``topic`` unless it exists."""
        if topic not in self.logs:
            self.logs[topic] = [[] for _ in range(partitions or self.default_partitions)]

    def partition_for(self, topic: str, key: bytes) -> int:
        """murmur2 of the key over the topic's partitions (aiokafka's DefaultPartitioner, Kafka's Java clients).
        Creates the topic if needed, as a broker that auto-creates topics does."""
        self.create(topic)
        partitions = list(range(len(self.logs[topic])))
        return int(self._partitioner(key, partitions, partitions))

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes) -> int:
        """Append to a partition's log; returns the offset."""
        log = self.logs[topic][partition]
        log.append((key, value))
        return len(log) - 1

    def produce(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """Append to the key's partition, as a producer would (e.g. an adapter); returns (partition, offset)."""
        partition = self.partition_for(topic, key)
        return partition, self.append(topic, partition, key, value)

    def values(self, topic: str) -> list[bytes]:
        """Every value of ``topic``, partition by partition."""
        return [value for log in self.logs.get(topic, []) for _, value in log]


class MemoryBroker:
    """One group member on a :class:`MemoryKafka`: it is given every partition of the topics it subscribes to
    (the only member), starting from the group's committed offsets (else the earliest)."""

    def __init__(self, kafka: MemoryKafka, group: str = "satpulse-worker") -> None:
        self.kafka = kafka
        self.group = group
        self.positions: dict[TopicPartition, int] = {}  # the assignment and the next offset to fetch
        self.listener: RebalanceListener | None = None

    async def ensure_topics(self) -> None:
        for topic in topics.ALL_TOPICS:
            self.kafka.create(topic)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.positions = {}

    async def subscribe(self, topic_names: Sequence[str], listener: RebalanceListener) -> None:
        self.listener = listener
        assigned = [TopicPartition(t, p) for t in topic_names for p in range(len(self.kafka.logs[t]))]
        await self._assign(assigned)

    async def rebalance(self) -> None:
        """Take every partition away and give it back (what a member joining or leaving the group does to
        this one): revoke waits as the listener decides; fetching resumes from the committed offsets."""
        assert self.listener is not None
        assigned = list(self.positions)
        await self.listener.revoke(assigned)
        self.positions = {}
        await self._assign(assigned)

    async def _assign(self, assigned: Sequence[TopicPartition]) -> None:
        committed = self.kafka.committed.get(self.group, {})
        self.positions = {tp: committed.get(tp, 0) for tp in assigned}
        assert self.listener is not None
        await self.listener.assign(assigned)

    async def fetch(self, max_records: int, max_age_seconds: float) -> dict[TopicPartition, list[FakeRecord]]:
        await asyncio.sleep(0)  # a fetch yields to the loop, as a real one does
        batch: dict[TopicPartition, list[FakeRecord]] = {}
        left = max_records
        for tp, position in self.positions.items():
            log = self.kafka.logs[tp.topic][tp.partition]
            taken = log[position:position + left]
            if taken:
                batch[tp] = [FakeRecord(tp.topic, tp.partition, position + i, key, value)
                             for i, (key, value) in enumerate(taken)]
                self.positions[tp] = position + len(taken)
                left -= len(taken)
        return batch

    async def partitions_for(self, topic: str) -> list[int]:
        return list(range(len(self.kafka.logs[topic])))

    async def partition(self, topic: str, key: bytes) -> int:
        return self.kafka.partition_for(topic, key)

    async def publish(self, messages: Sequence[Message], partitions: Sequence[int | None] = ()
                      ) -> list[tuple[int, int]]:
        faults = self.kafka.faults
        failing = faults.take("publish")
        if failing and not faults.publish_appends:
            raise Crash("publish: no message reached the broker")
        positions = []
        for index, (topic, key, value) in enumerate(messages):
            partition = partitions[index] if partitions else None
            if partition is None:
                partition = self.kafka.partition_for(topic, key)
            positions.append((partition, self.kafka.append(topic, partition, key, value)))
        if failing:
            raise Crash("publish: appended, the acks were lost")
        faults.journal.append("publish " + " ".join(sorted({topic for topic, _, _ in messages})))
        return positions

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.kafka.faults.take("commit"):
            raise Crash("commit")
        self.kafka.committed.setdefault(self.group, {}).update(offsets)
        self.kafka.faults.journal.append("commit")

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.kafka.committed.get(self.group, {}).get(partition)

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.kafka.logs[tp.topic][tp.partition]) for tp in partitions}

    async def lag(self) -> dict[TopicPartition, int]:
        return {tp: len(self.kafka.logs[tp.topic][tp.partition]) - position
                for tp, position in self.positions.items()}


class MemoryWindowStore:
    """:class:`domain.store.WindowStateStore` with ClickHouse's semantics. Calls hold a lock: the pipeline
    reads results on a second thread while it writes on the first."""

    def __init__(self, faults: Faults | None = None, feedback_topic: str = topics.FEEDBACK) -> None:
        self.faults = faults or Faults()
        self.feedback_topic = feedback_topic  # the other sources are of the tickets topic
        self.cells: dict[tuple[Source, WindowKey], tuple[WindowAgg, int]] = {}
        self.feedback: list[StoredEvent] = []
        self.tickets: list[StoredEvent] = []
        self._lock = threading.Lock()

    def persisted_offset(self, source: Source) -> int:
        with self._lock:
            return max((v for (s, _), (_, v) in self.cells.items() if s == source), default=-1)

    def discard_uncounted_events(self, source: Source, persisted_offset: int) -> None:
        with self._lock:
            events = self.feedback if source[0] == self.feedback_topic else self.tickets
            events[:] = [e for e in events if e[0] != source[1] or e[1] <= persisted_offset]

    def stored_window_starts(self, source: Source) -> set[int]:
        with self._lock:
            return {key[2] for (s, key) in self.cells if s == source}  # the checkpoint row's too, as in ClickHouse

    def load_cells(self, source: Source, keys: Iterable[WindowKey]) -> dict[WindowKey, tuple[WindowAgg, int]]:
        with self._lock:
            found = {}
            for key in keys:
                cell = self.cells.get((source, key))
                if cell is not None:
                    found[key] = (cell[0].copy(), cell[1])
            return found

    def totals(self, keys: Iterable[WindowKey]) -> dict[WindowKey, WindowAgg]:
        wanted = set(keys)
        with self._lock:
            out: dict[WindowKey, WindowAgg] = {}
            for (_, key), (agg, _) in self.cells.items():
                if key in wanted:
                    out.setdefault(key, WindowAgg()).merge(agg)
            return out

    def rolling_totals(self, now: int, periods: Mapping[str, int], dimensions: Sequence[str]
                       ) -> dict[tuple[str, str, str], tuple[int, int]]:
        out: dict[tuple[str, str, str], tuple[int, int]] = {}
        with self._lock:
            for (_, (dimension, value, start)), (agg, _) in self.cells.items():
                for name, seconds in periods.items():
                    if dimension in dimensions and agg.rated and start // 1000 >= now - seconds:
                        rated, satisfied = out.get((dimension, value, name), (0, 0))
                        out[(dimension, value, name)] = (rated + agg.rated, satisfied + agg.satisfied)
        return out

    def load_ratings(self, source: Source, ids: Iterable[str], max_offset: int) -> dict[str, RatingState]:
        wanted = set(ids)
        found: dict[str, RatingState] = {}
        with self._lock:
            for partition, offset, record in self.feedback:
                rid = record["rating_id"]
                if partition == source[1] and offset <= max_offset and rid in wanted:
                    found[rid] = newer_rating(found.get(rid), rating_state(record))
        return found

    def load_ticket_events(self, source: Source, ids: Iterable[str], max_offset: int
                           ) -> dict[str, list[dict[str, Any]]]:
        wanted = set(ids)
        found: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for partition, offset, record in self.tickets:
                if partition == source[1] and offset <= max_offset and record["ticket_id"] in wanted:
                    found.setdefault(record["ticket_id"], []).append(dict(record))
        return found

    def write(self, cells: Sequence[CellRow], feedback: Sequence[StoredEvent], tickets: Sequence[StoredEvent]
              ) -> None:
        failing = self.faults.take("write")
        if failing and not self.faults.write_stores_events:
            raise self.faults.write_error("write")
        with self._lock:  # two inserts, as in ClickHouse: the events, then the cells
            self.feedback += feedback
            self.tickets += tickets
        if failing:
            raise self.faults.write_error("write")
        with self._lock:
            for row in cells:
                current = self.cells.get((row.source, row.key))
                if current is None or row.version >= current[1]:  # equal versions: the last insert wins
                    self.cells[(row.source, row.key)] = (row.agg.copy(), row.version)
        self.faults.journal.append("write")

    def recheck_rollups(self, sources: Iterable[Source]) -> None:
        pass  # no roll-ups: reports over them are the ClickHouse store's tests

    def refresh_rollups(self, force: bool = False) -> None:
        pass

    def cell_totals(self) -> dict[WindowKey, WindowAgg]:
        """Every non-empty cell summed over sources: what a report of the whole range reads."""
        with self._lock:
            out: dict[WindowKey, WindowAgg] = {}
            for (_, key), (agg, _) in self.cells.items():
                out.setdefault(key, WindowAgg()).merge(agg)
        return {key: agg for key, agg in out.items() if not agg.is_empty()}


class MemoryDeadLetterStore:
    """The ``dead_letters`` table: rows keyed by origin, stage and reason (a message stored again replaces its
    row); a message that is no dead letter is kept under stage ``sink``."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.rows: dict[tuple[Any, ...], bytes] = {}  # (origin topic, partition, offset, ref, stage, reason) -> payload
        self._buffer: list[tuple[tuple[Any, ...], bytes]] = []

    def add(self, value: bytes, topic: str, partition: int, offset: int) -> None:
        try:
            r = codec.decode(value, codec.DEAD_LETTER)[1]
        except codec.DecodeError:
            self._buffer.append(((topic, partition, offset, None, "sink", "unparseable_payload"), value))
            return
        key = (r["origin_topic"], r["origin_partition"], r["origin_offset"], r["origin_ref"], r["stage"], r["reason"])
        self._buffer.append((key, bytes(r["payload"])))

    def flush(self) -> int:
        if self.faults.take("dead_letter_write"):
            raise self.faults.write_error("dead-letter write")
        self.rows.update(self._buffer)
        written, self._buffer = len(self._buffer), []
        self.faults.journal.append("dead-letter write")
        return written


class FakeConnection:
    """The ClickHouse connection of the stores: only closed (pages that read through it are tested on
    ClickHouse)."""

    database = "memory"

    def __init__(self) -> None:
        self.closed = False

    def execute(self, sql: str, params: Any = None) -> None:
        raise NotImplementedError(sql)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError(sql)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError(table)

    def close(self) -> None:
        self.closed = True


def memory_stores(window: MemoryWindowStore, dead_letters: MemoryDeadLetterStore) -> StoreFactory:
    """A store factory for :class:`streams.pipeline.Pipeline` handing out these stores (they outlive workers:
    a restarted worker finds what the previous one wrote)."""

    def build(settings: Settings) -> Stores:
        return Stores(window, dead_letters, FakeConnection())

    return build
