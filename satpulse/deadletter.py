"""Dead-letter records (schemas/dead_letter.avsc): one builder for every stage."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from satpulse import codec

DEFAULT_PAYLOAD_MAX_BYTES = 64 * 1024  # SATPULSE_DEAD_LETTER_PAYLOAD_MAX_BYTES
DETAIL_MAX_CHARS = 2000
REF_MAX_CHARS = 1024


class Origin(NamedTuple):
    """Where an input came from: a Kafka position or, for files and HTTP, a reference such as path:line."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    ref: str | None = None

    def key(self) -> str:
        if self.topic is not None:
            return f"{self.topic}/{self.partition}/{self.offset}"
        return (self.ref or "")[:REF_MAX_CHARS]


def encode_dead_letter(reason: str, detail: str, stage: str, payload: bytes, origin: Origin, now_ms: int,
                       payload_max_bytes: int = DEFAULT_PAYLOAD_MAX_BYTES) -> tuple[bytes, bytes]:
    """(key, value) of a dead-letter message. Never raises for any payload bytes, and the message stays below
    ``payload_max_bytes`` + 4 KB whatever the payload's size: it carries the payload's first
    ``payload_max_bytes`` bytes, its size and its SHA-256."""
    record = {
        "reason": reason, "detail": _utf8(detail[:DETAIL_MAX_CHARS]), "stage": stage,
        "origin_topic": origin.topic, "origin_partition": origin.partition, "origin_offset": origin.offset,
        "origin_ref": None if origin.ref is None else _utf8(origin.ref[:REF_MAX_CHARS]),
        "payload": payload[:payload_max_bytes], "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(), "failed_at": now_ms,
    }
    return _utf8(origin.key()).encode(), codec.encode(codec.DEAD_LETTER, record)


def _utf8(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
