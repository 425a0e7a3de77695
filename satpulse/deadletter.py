"""Dead-letter records (schemas/dead_letter.avsc): one builder for every stage."""

from __future__ import annotations

from dataclasses import dataclass

from satpulse import codec


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an input came from: a Kafka position or, for files and HTTP, a reference such as path:line."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    ref: str | None = None

    def key(self) -> str:
        if self.topic is not None:
            return f"{self.topic}/{self.partition}/{self.offset}"
        return self.ref or ""


def encode_dead_letter(reason: str, detail: str, stage: str, payload: bytes, origin: Origin, now_ms: int
                       ) -> tuple[bytes, bytes]:
    """(key, value) of a dead-letter message. Never raises for any payload bytes."""
    record = {
        "reason": reason, "detail": detail[:2000], "stage": stage,
        "origin_topic": origin.topic, "origin_partition": origin.partition, "origin_offset": origin.offset,
        "origin_ref": origin.ref, "payload": payload, "failed_at": now_ms,
    }
    return origin.key().encode(), codec.encode(codec.DEAD_LETTER, record)
