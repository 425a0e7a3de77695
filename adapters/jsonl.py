"""JSONL file adapter: one raw submission (docs/ingest-format.md) per line -> the ingest topic.

Every line that is a JSON object gets the privacy policy (:mod:`adapters.privacy`) before it is published; one
the policy leaves unchanged is published byte for byte as read. A line that is not a JSON object goes to the
dead-letter topic with reason ``unparseable_payload`` and its origin ``path:line``, as read (no policy: it is
no submission); validation of the fields is the cleaner's job. Blank lines are skipped.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from adapters.privacy import PrivacyPolicy
from adapters.publisher import Publisher
from domain.clean import entity_key
from satpulse import metrics, topics
from satpulse.deadletter import Origin, encode_dead_letter

STAGE = "jsonl"


@dataclass
class ImportSummary:
    lines: int = 0
    published: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def key_of(obj: dict[str, object]) -> bytes | None:
    """Partition key: the key of the clean event it becomes (:func:`domain.clean.entity_key`: a case's events
    stay in order in one partition, and so do a rating's versions)."""
    key = entity_key(obj)
    return None if key is None else key.encode()


def ingest_message(obj: dict[str, object], line: bytes, privacy: PrivacyPolicy) -> tuple[bytes | None, bytes]:
    """(key, value) of the ingest message of the submission ``obj`` parsed from ``line``: ``privacy`` applied,
    the line itself when that changes nothing, else the changed submission as JSON."""
    prepared = privacy.apply(obj)
    value = line if prepared == obj else json.dumps(prepared, ensure_ascii=False).encode()
    return key_of(prepared), value


def publish_jsonl(path: Path, publisher: Publisher, privacy: PrivacyPolicy) -> ImportSummary:
    """Publish every line of ``path``, ``privacy`` applied to each submission. Blocks; raises
    PublishError/KafkaError if Kafka does not acknowledge. The caller flushes the publisher (its context
    manager does)."""
    summary = ImportSummary()
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            summary.lines += 1
            metrics.EVENTS_IN.labels(STAGE).inc()
            payload = line.rstrip(b"\r\n")
            try:
                obj = json.loads(payload)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                key, value = encode_dead_letter("unparseable_payload", f"line {number}: {exc}", STAGE, payload,
                                                Origin(ref=f"{path}:{number}"), int(time.time() * 1000))
                publisher.send(topics.DEAD_LETTER, key, value)
                summary.rejected["unparseable_payload"] += 1
                metrics.DEAD_LETTERS.labels(STAGE, "unparseable_payload").inc()
                continue
            publisher.send(topics.INGEST, *ingest_message(obj, payload, privacy))
            summary.published += 1
            metrics.EVENTS_OUT.labels(STAGE, str(obj.get("kind", "feedback"))).inc()
    return summary
