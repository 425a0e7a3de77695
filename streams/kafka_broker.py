"""The worker's :class:`streams.broker.Broker` on aiokafka: one consumer (group ``worker_id``, manual commits,
earliest offsets) and one idempotent producer (acks=all) sending record batches per partition."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.partitioner import DefaultPartitioner

from adapters.publisher import ensure_topics
from satpulse.record_batches import send_in_batches
from satpulse.settings import Settings
from streams.broker import Message, RebalanceListener, Record, TopicPartition

log = logging.getLogger(__name__)
FETCH_GRACE_SECONDS = 0.5  # how much longer than its timeout a fetch may wait for a rebalance to end


class KafkaBroker:
    """The consumer and producer of one worker process, configured from ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._partitions: dict[str, list[int]] = {}  # partitions of each topic published to
        self._partitioner = DefaultPartitioner()  # murmur2 of the key, as Kafka's Java clients
        self.consumer: AIOKafkaConsumer | None = None  # both created by start(), inside the running loop
        self.producer: AIOKafkaProducer | None = None

    async def ensure_topics(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, ensure_topics, self.settings)

    async def start(self) -> None:
        s = self.settings
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

    async def stop(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                await client.stop()

    async def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        consumer = self._consumer()
        # subscribe only once the broker's metadata lists every topic: a group joined before that is assigned
        # nothing until the next metadata refresh (minutes) notices them (seen on a freshly started broker)
        while not set(topics) <= await consumer.topics():
            log.info("waiting for topics %s in the broker's metadata", topics)
            await asyncio.sleep(0.5)
        consumer.subscribe(list(topics), listener=_Rebalance(listener))

    async def fetch(self, max_records: int, max_age_seconds: float) -> Mapping[TopicPartition, Sequence[Record]]:
        consumer = self._consumer()
        batch = await self._getmany(consumer, max_age_seconds, max_records)
        count = sum(len(records) for records in batch.values())
        deadline = time.monotonic() + max_age_seconds
        while batch and count < max_records and (left := deadline - time.monotonic()) > 0:
            for tp, records in (await self._getmany(consumer, left, max_records - count)).items():
                batch[tp] = batch.get(tp, []) + records
                count += len(records)
        return batch

    @staticmethod
    async def _getmany(consumer: AIOKafkaConsumer, timeout: float, max_records: int
                       ) -> dict[TopicPartition, list[Any]]:
        """``getmany``, returning nothing after ``timeout`` + :data:`FETCH_GRACE_SECONDS`: while the group
        rebalances, aiokafka waits for the new assignment whatever the timeout (up to the session timeout when a
        member died), and a stop waits for the fetch in progress."""
        try:
            records: dict[TopicPartition, list[Any]] = await asyncio.wait_for(
                consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records),
                timeout + FETCH_GRACE_SECONDS)
        except TimeoutError:  # cancelled before it took any record: they stay in the consumer's buffer
            return {}
        return records

    async def partitions_for(self, topic: str) -> list[int]:
        # the producer's view: it fetches a topic's metadata on demand (the consumer's knows only subscriptions)
        return sorted(await self._producer().partitions_for(topic))

    async def partition(self, topic: str, key: bytes) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = await self.partitions_for(topic)
        return int(self._partitioner(key, partitions, partitions))

    async def publish(self, messages: Sequence[Message], partitions: Sequence[int | None] = ()
                      ) -> list[tuple[int, int]]:
        """Messages are grouped by partition and sent as record batches (one ``send`` per message cost 22 µs
        of the worker's per-event budget)."""
        producer = self._producer()
        by_partition: dict[tuple[str, int], list[int]] = {}
        for index, (topic, key, _) in enumerate(messages):
            partition = partitions[index] if partitions else None
            if partition is None:
                partition = await self.partition(topic, key)
            by_partition.setdefault((topic, partition), []).append(index)
        sent = []  # (partition, indexes of the batch's messages, future of its RecordMetadata)
        for (topic, partition), indexes in by_partition.items():
            start = 0
            for count, future in await send_in_batches(producer, topic, partition,
                                                       (messages[i][1:] for i in indexes)):
                sent.append((partition, indexes[start:start + count], future))
                start += count
        positions = [(-1, -1)] * len(messages)
        for partition, held, future in sent:
            base = (await future).offset  # a batch's records get consecutive offsets from its base offset
            for i, index in enumerate(held):
                positions[index] = (partition, base + i)
        return positions

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            await self._consumer().commit(dict(offsets))
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit refused after a rebalance (the batch will be replayed): %s", exc)

    async def committed(self, partition: TopicPartition) -> int | None:
        offset: int | None = await self._consumer().committed(partition)
        return offset

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self._consumer().end_offsets(list(partitions))
        return ends

    async def lag(self) -> dict[TopicPartition, int]:
        consumer = self._consumer()
        lag = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                lag[tp] = max(0, high - await consumer.position(tp))
        return lag

    def _consumer(self) -> AIOKafkaConsumer:
        assert self.consumer is not None, "KafkaBroker.start() first"
        return self.consumer

    def _producer(self) -> AIOKafkaProducer:
        assert self.producer is not None, "KafkaBroker.start() first"
        return self.producer


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: RebalanceListener) -> None:
        self.listener = listener

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.listener.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.listener.assign(assigned)
