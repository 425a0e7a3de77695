"""The cleaning step: one raw ingest payload in, one message out (clean event or dead letter). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from satpulse import codec, topics
from satpulse.deadletter import Origin, encode_dead_letter
from streams.clean import Rejected, clean, parse_json_object

STAGE = "cleaner"


@dataclass(frozen=True, slots=True)
class Routed:
    """A message to publish; ``reason`` is set for dead letters, ``kind`` and ``record`` (the clean record that
    ``value`` encodes) for clean events."""

    topic: str
    key: bytes
    value: bytes
    kind: str | None = None
    reason: str | None = None
    record: dict[str, Any] | None = None


def route(payload: bytes, origin: Origin, now_ms: int, future_tolerance_ms: int) -> Routed:
    """Clean ``payload`` into its topic, or build its dead letter with reason and origin. Never raises."""
    try:
        cleaned = clean(parse_json_object(payload), now_ms, future_tolerance_ms)
        value = codec.encode(cleaned.schema, cleaned.record)
    except Rejected as exc:
        key, value = encode_dead_letter(exc.reason, exc.detail, STAGE, payload, origin, now_ms)
        return Routed(topics.DEAD_LETTER, key, value, reason=exc.reason)
    except (ValueError, TypeError) as exc:  # e.g. lone surrogates that UTF-8 cannot carry
        key, value = encode_dead_letter("unparseable_payload", f"cannot encode: {exc}", STAGE, payload, origin,
                                        now_ms)
        return Routed(topics.DEAD_LETTER, key, value, reason="unparseable_payload")
    if cleaned.schema == codec.FEEDBACK_EVENT:
        return Routed(topics.FEEDBACK, cleaned.key.encode(), value, kind="feedback", record=cleaned.record)
    return Routed(topics.TICKETS, cleaned.key.encode(), value, kind="ticket", record=cleaned.record)
