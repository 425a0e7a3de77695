"""JSONL file adapter: one raw submission (docs/ingest-format.md) per line -> the ingest topic.

Every line that is a JSON object goes through the emit path (:mod:`adapters.emit`: privacy policy, key,
encoding); one the policy leaves unchanged is published byte for byte as read. A line that is not a JSON object
goes to the dead-letter topic with reason ``unparseable_payload`` and its origin ``path:line``, as read (no
policy: it is no submission); validation of the fields is the cleaner's job. Blank lines are skipped.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from adapters.emit import Emitter, IngestEncoder
from adapters.privacy import PrivacyPolicy
from adapters.publisher import Publisher
from satpulse.deadletter import Origin

STAGE = "jsonl"


@dataclass
class ImportSummary:
    lines: int = 0
    published: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def publish_jsonl(path: Path, publisher: Publisher, privacy: PrivacyPolicy) -> ImportSummary:
    """Publish every line of ``path``, ``privacy`` applied to each submission. Blocks; raises
    PublishError/KafkaError if Kafka does not acknowledge. The caller flushes the publisher (its context
    manager does)."""
    summary = ImportSummary()
    emitter = Emitter(STAGE, publisher.send, IngestEncoder(privacy))
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            summary.lines += 1
            emitter.received()
            payload = line.rstrip(b"\r\n")
            origin = Origin(ref=f"{path}:{number}")
            try:
                obj = json.loads(payload)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                emitter.dead_letter("unparseable_payload", f"line {number}: {exc}", payload, origin)
                summary.rejected["unparseable_payload"] += 1
                continue
            reason = emitter.submission(obj, origin, payload, as_read=payload)
            if reason is None:
                summary.published += 1
            else:
                summary.rejected[reason] += 1
    return summary
