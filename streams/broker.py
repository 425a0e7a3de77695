"""The Kafka side of the worker, as the pipeline uses it: one consumer-group member that fetches batches and
commits offsets, and one idempotent producer (acks=all). :class:`streams.kafka_broker.KafkaBroker` is the
aiokafka implementation; tests/fakes.py holds an in-memory one.

Every call works on a whole batch (no per-record call crosses this interface: the hot path stays as it was).
Calls may raise the broker's error (KafkaError) unless a method says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from aiokafka.structs import TopicPartition as TopicPartition  # a (topic, partition) named tuple

Message = tuple[str, bytes, bytes]  # (topic, key, value)


class Record(Protocol):
    """A fetched record (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class RebalanceListener(Protocol):
    """Told when the group gives this member partitions or takes them away. ``revoke`` may wait (for the
    batches in flight): the group waits for it before handing the partitions to another member."""

    async def assign(self, partitions: Iterable[TopicPartition]) -> None: ...

    async def revoke(self, partitions: Iterable[TopicPartition]) -> None: ...


class Broker(Protocol):
    """A consumer-group member and a producer. Create it outside the event loop; use it inside, after
    :meth:`start`."""

    async def ensure_topics(self) -> None:
        """Create the pipeline's topics that do not exist yet. Raises when the broker is unreachable (any
        Exception: the caller retries)."""

    async def start(self) -> None:
        """Connect the consumer and the producer."""

    async def stop(self) -> None:
        """Leave the group and flush the producer; safe after a failed or partial :meth:`start`."""

    async def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """Join the group for ``topics`` (waiting until the broker's metadata lists them all); ``listener``
        hears of every assignment and revocation from then on."""

    async def fetch(self, max_records: int, max_age_seconds: float) -> Mapping[TopicPartition, Sequence[Record]]:
        """Up to ``max_records`` records in offset order per partition: the first that arrive within
        ``max_age_seconds``, then what follows until the batch is full or that long has passed since the
        first. Empty when nothing arrived. Blocks for at most about twice ``max_age_seconds``."""

    async def partitions_for(self, topic: str) -> list[int]:
        """The partitions of ``topic``, sorted."""

    async def partition(self, topic: str, key: bytes) -> int:
        """The partition a message keyed ``key`` goes to: murmur2 of the key over the topic's partitions, as
        aiokafka's DefaultPartitioner and Kafka's Java clients choose it."""

    async def publish(self, messages: Sequence[Message], partitions: Sequence[int | None] = ()
                      ) -> list[tuple[int, int]]:
        """Send ``messages`` and wait until the broker acknowledged every one (acks=all); returns each one's
        (partition, offset). A message goes to ``partitions[i]`` when given (the partition its key maps to),
        else to its key's partition. On failure some messages may have been appended (a retry duplicates
        them)."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the group's next offsets. A commit refused because a rebalance took the partitions is
        logged, not raised: the new owner replays from the previous commit."""

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset of ``partition`` (None: none yet)."""

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset the next message of each partition will get."""

    async def lag(self) -> dict[TopicPartition, int]:
        """Messages after this member's position in each assigned partition whose end is known (fetched at
        least once)."""
