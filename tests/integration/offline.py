"""Pieces shared by the integration tests: the offline answers, written independently of streams/ (which
native values of devtools.sample's scales are satisfied, and its channel spellings), and small helpers for the
real broker and ClickHouse."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools import worker_process
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
