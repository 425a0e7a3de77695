"""Pieces shared by the integration tests: the offline answers, written independently of streams/ (which
native values of devtools.sample's scales are satisfied, and its channel spellings), and small helpers for the
real broker and ClickHouse."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from devtools import worker_process
from domain.clean import entity_key
from satpulse.settings import get_settings

SATISFIED: dict[str, Callable[[object], bool]] = {
    "1-5": lambda v: float(str(v)) >= 4,
    "good_bad": lambda v: v == "good",
    "freshdesk": lambda v: int(str(v)) in (102, 103),
    "helpscout": lambda v: v == "great",
    "0-10": lambda v: int(str(v)) >= 8,
    "label5": lambda v: v in ("good", "amazing"),
}
CHANNEL = {"Phone": "phone", "E-mail": "email", "email": "email", "Live chat": "chat", "web survey": "web",
           "Social media": "social"}


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clickhouse_url(engine: str, tmp_path: Path, prefix: str = "t") -> str:
    """A fresh place to store: a chDB directory under ``tmp_path`` or a new database on the local server."""
    if engine == "chdb":
        return f"chdb://{tmp_path / 'chdb'}"
    port = get_settings().clickhouse_native_port
    return f"clickhouse://default:@127.0.0.1:{port}/{prefix}_{uuid.uuid4().hex[:8]}"


def produce(topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> list[tuple[int, int]]:
    """Publish (key, value) messages to ``topic`` in order and wait for the acks (acks=all); returns each one's
    (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=get_settings().kafka_bootstrap, acks="all",
                             max_request_size=2 * 1024 * 1024, linger_ms=20)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in messages]
        producer.flush()
        return [(m.partition, m.offset) for m in (f.get(timeout=60) for f in futures)]
    finally:
        producer.close()


def keyed(submission: dict[str, Any]) -> tuple[bytes | None, bytes]:
    """(key, value) of a raw submission as the adapters publish it: keyed by its clean event's key."""
    key = entity_key(submission)
    return (None if key is None else key.encode()), json.dumps(submission).encode()


def read_topic(topic: str) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of every message of :func:`read_records`."""
    return [(r.key, r.value) for r in read_records(topic)]


def read_records(topic: str) -> list[Any]:
    """Every record (kafka-python ConsumerRecord) on ``topic`` up to its end offsets now, no waiting: call it
    after the producers flushed (acks=all)."""
    return worker_process.read_records(get_settings().kafka_bootstrap, topic)


def topic_values(topic: str) -> list[bytes]:
    """The values of :func:`read_topic`."""
    return [value for _, value in read_topic(topic)]
