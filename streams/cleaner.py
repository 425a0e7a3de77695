"""The cleaning step: one raw ingest payload in, one message out (clean event or dead letter). Pure.

:func:`route` is the one guard of the clean stage: whatever happens while parsing, cleaning or encoding one
payload, it returns a message for it, so one record can never stop the stage.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from domain.clean import Rejected, clean, parse_json_object
from domain.limits import DEFAULT_LIMITS, Limits
from domain.records import CleanEvent
from satpulse import codec, topics
from satpulse.deadletter import DEFAULT_PAYLOAD_MAX_BYTES, Origin, encode_dead_letter
from satpulse.metrics import STAGE_LABEL
from satpulse.stages import Stage

STAGE = STAGE_LABEL[Stage.CLEAN]  # the dead letters' stage
log = logging.getLogger(__name__)


class CleanMessage(NamedTuple):
    """A clean event to publish: ``value`` encodes ``record`` (a ``kind`` event) for ``topic``, keyed by its
    rating or case id."""

    topic: str
    key: bytes
    value: bytes
    kind: str  # feedback or ticket
    record: CleanEvent


class DeadLetterMessage(NamedTuple):
    """A dead letter to publish on the dead-letter topic: ``reason`` is one of domain.clean.REASONS."""

    topic: str
    key: bytes
    value: bytes
    reason: str


Routed = CleanMessage | DeadLetterMessage  # what one raw payload becomes


def route(payload: bytes, origin: Origin, now_ms: int, future_tolerance_ms: int, limits: Limits = DEFAULT_LIMITS,
          dead_letter_payload_max_bytes: int = DEFAULT_PAYLOAD_MAX_BYTES) -> Routed:
    """Clean ``payload`` into its topic, or build its dead letter with reason and origin. Never raises: a
    Rejected input keeps its reason; any other exception (a defect, or an input no check foresaw) becomes
    ``processing_error`` with the exception's class and message. Every message returned fits
    ``limits.max_event_bytes`` (clean events) or ``dead_letter_payload_max_bytes`` + 4 KB (dead letters)."""
    try:
        cleaned = clean(parse_json_object(payload, limits), now_ms, future_tolerance_ms, limits)
        value = codec.encode(cleaned.schema, cleaned.record)
        if len(value) > limits.max_event_bytes:
            raise Rejected("too_large", f"the clean event is {len(value)} bytes (limit {limits.max_event_bytes})")
    except Rejected as exc:
        reason, detail = exc.reason, exc.detail
    except Exception as exc:  # the guard: no single payload may stop the stage
        log.warning("processing_error at %s: %s", origin.key(), type(exc).__name__)
        reason, detail = "processing_error", f"{type(exc).__name__}: {str(exc)[:500]}"
    else:
        kind = "feedback" if cleaned.schema == codec.FEEDBACK_EVENT else "ticket"
        topic = topics.FEEDBACK if kind == "feedback" else topics.TICKETS
        return CleanMessage(topic, cleaned.key.encode(), value, kind, cleaned.record)
    key, value = encode_dead_letter(reason, detail, STAGE, payload, origin, now_ms, dead_letter_payload_max_bytes)
    return DeadLetterMessage(topics.DEAD_LETTER, key, value, reason)
