"""Publishing to Kafka for adapters (kafka-python): idempotent producer, acks=all, bounded buffer.

Contract: :meth:`Publisher.send` may block (up to ``max_block_ms``) while the producer's bounded buffer is
full — that is the back-pressure while Kafka is slow or down; it raises KafkaTimeoutError if Kafka stays
unreachable. :meth:`Publisher.flush` blocks until every message sent so far is acknowledged by the broker and
raises :class:`PublishError` if any failed. Nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    """Create missing topics with ``settings.topic_partitions`` partitions. Blocks; raises KafkaError."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="satpulse-admin",
                             request_timeout_ms=30_000)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, settings.topic_partitions, 1) for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


class Publisher:
    """One idempotent producer; use as a context manager so that it is flushed and closed."""

    def __init__(self, settings: Settings, buffer_bytes: int = 32 * 1024 * 1024, max_block_ms: int = 120_000
                 ) -> None:
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
            linger_ms=20, batch_size=256 * 1024, buffer_memory=buffer_bytes, max_block_ms=max_block_ms,
            compression_type=None, client_id="satpulse-adapter")
        self._futures: list[Any] = []
        self.sent = 0

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one message (may block while the buffer is full). Raises KafkaTimeoutError."""
        self._futures.append(self._producer.send(topic, key=key, value=value))
        self.sent += 1
        if len(self._futures) >= 50_000:
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
