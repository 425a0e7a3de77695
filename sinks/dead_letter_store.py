"""Dead letters in ClickHouse (table ``dead_letters``, migration 2), fed from the dead-letter topic.

Contract: :meth:`DeadLetterStore.add` buffers one dead-letter message (no I/O, never raises for any bytes);
:meth:`DeadLetterStore.flush` inserts the buffer as one block and blocks until ClickHouse accepted it, then
the caller may acknowledge the messages. It raises ClickHouseError and keeps the buffer, so it may be retried.
Rows are keyed by origin (topic, partition, offset or reference), stage and reason in a ReplacingMergeTree: a
retry, a replay or a dead letter produced twice is stored once (readers use FINAL).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from satpulse import codec
from sinks.clickhouse import ClickHouse

DEAD_LETTER_COLUMNS = ("origin_topic", "origin_partition", "origin_offset", "origin_ref", "stage", "reason",
                       "detail", "payload", "payload_size", "payload_sha256", "failed_at", "failed_at_ms",
                       "dead_letter_partition", "dead_letter_offset", "received_at")
# a message on the dead-letter topic that is not a dead letter itself is kept under this stage and reason
SINK_STAGE = "sink"


class DeadLetterStore:
    """Buffers dead-letter messages and writes them to ``dead_letters``. Not thread-safe."""

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch
        self._rows: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        """Messages buffered and not yet flushed."""
        return len(self._rows)

    def add(self, value: bytes, topic: str, partition: int, offset: int) -> None:
        """Buffer the dead-letter message at (topic, partition, offset). A message that does not decode is kept
        too, as reason ``unparseable_payload`` at stage ``sink`` with that position as its origin."""
        now_ms = int(time.time() * 1000)
        try:
            record = codec.decode(value, codec.DEAD_LETTER)[1]
        except codec.DecodeError as exc:
            record = {"reason": "unparseable_payload", "detail": str(exc), "stage": SINK_STAGE,
                      "origin_topic": topic, "origin_partition": partition, "origin_offset": offset,
                      "origin_ref": None, "payload": value, "payload_size": len(value),
                      "payload_sha256": hashlib.sha256(value).hexdigest(), "failed_at": now_ms}

        def either(key: str, default: Any) -> Any:
            return default if record[key] is None else record[key]

        failed_at_ms = int(record["failed_at"])
        self._rows.append((
            either("origin_topic", ""), either("origin_partition", -1), either("origin_offset", -1),
            either("origin_ref", ""), record["stage"], record["reason"], record["detail"], bytes(record["payload"]),
            either("payload_size", 0), either("payload_sha256", ""), failed_at_ms // 1000, failed_at_ms, partition,
            offset, now_ms // 1000))

    def flush(self) -> int:
        """Insert the buffered rows as one block; returns how many. Blocks; raises ClickHouseError (the
        buffer is kept for a retry). Idempotent per origin, stage and reason."""
        if not self._rows:
            return 0
        self.ch.insert(f"{self.ch.database}.dead_letters", DEAD_LETTER_COLUMNS, self._rows)
        written, self._rows = len(self._rows), []
        return written
