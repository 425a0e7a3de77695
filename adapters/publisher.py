"""Publishing to Kafka for adapters (kafka-python): idempotent producer, acks=all, bounded buffer.

Contract: at most ``max_pending`` messages are unacknowledged at any time: :meth:`Publisher.send` blocks
in :meth:`flush` once that many are pending — that is the bounded buffer and the back-pressure while Kafka is
slow or down (kafka-python 3 has no byte bound of its own). It raises KafkaTimeoutError if Kafka stays
unreachable for ``max_block_ms``. :meth:`Publisher.flush` blocks until every message sent so far is
acknowledged by the broker and raises :class:`PublishError` if any failed. Nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from satpulse import topics
from satpulse.settings import Settings


class PublishError(RuntimeError):
    """Some messages were not acknowledged by the broker."""


def ensure_topics(settings: Settings, names: Iterable[str] = topics.ALL_TOPICS) -> None:
    """Create missing topics with ``settings.topic_partitions`` partitions, ``topic_replication_factor``
    replicas and ``min.insync.replicas = topic_min_insync_replicas``; existing topics are not altered. Blocks;
    raises KafkaError (InvalidReplicationFactorError while fewer brokers than replicas are up)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="satpulse-admin",
                             request_timeout_ms=30_000)
    try:
        existing = set(admin.list_topics())
        configs = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
        new = [NewTopic(n, settings.topic_partitions, settings.topic_replication_factor, topic_configs=configs)
               for n in names if n not in existing]
        if new:
            with suppress(TopicAlreadyExistsError):  # another process created it meanwhile
                admin.create_topics(new)
    finally:
        admin.close()


class Publisher:
    """One idempotent producer; use as a context manager so that it is flushed and closed."""

    def __init__(self, settings: Settings, max_pending: int = 50_000, max_block_ms: int = 120_000) -> None:
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
            linger_ms=20, batch_size=256 * 1024, max_block_ms=max_block_ms,
            compression_type=None, client_id="satpulse-adapter")
        self._futures: list[Any] = []
        self._max_pending = max_pending
        self.sent = 0

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one message (may block while the buffer is full). Raises KafkaTimeoutError."""
        self._futures.append(self._producer.send(topic, key=key, value=value))
        self.sent += 1
        if len(self._futures) >= self._max_pending:
            self.flush()

    def flush(self) -> None:
        """Block until everything sent is acknowledged. Raises PublishError naming the first failure."""
        self._producer.flush()
        failed = [f for f in self._futures if f.failed()]
        self._futures.clear()
        if failed:
            raise PublishError(f"{len(failed)} messages not acknowledged: {failed[0].exception!r}")

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is None:
                self.flush()
        finally:
            self.close()
