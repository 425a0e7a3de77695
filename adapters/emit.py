"""One channel record's outcome -> Kafka messages: its submissions to the ingest topic (privacy applied first) or,
when the record could not be read, a dead letter with reason ``unparseable_payload`` and the record's origin.
Used by ``satpulse channel`` for files and for the IMAP mailbox poller (adapters/imap.py)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

from adapters.channels import Outcome
from adapters.jsonl import key_of
from adapters.privacy import PrivacyPolicy
from satpulse import metrics, topics
from satpulse.deadletter import Origin, encode_dead_letter

Send = Callable[[str, bytes | None, bytes], None]  # topic, key, value (Publisher.send, or a dry-run printer)


def emit_outcome(outcome: Outcome, send: Send, privacy: PrivacyPolicy, stage: str, counts: Counter[str]) -> None:
    """Hand the record's messages to ``send`` and count ``records``, ``events`` and ``rejected`` in ``counts``.
    Whatever ``send`` blocks on or raises (Publisher: back-pressure, KafkaTimeoutError) passes through; nothing is
    acknowledged here -- the caller flushes."""
    origin, submissions, error, original = outcome
    counts["records"] += 1
    if submissions is None:
        key, value = encode_dead_letter("unparseable_payload", error or "", stage, original, Origin(ref=origin),
                                        int(time.time() * 1000))
        send(topics.DEAD_LETTER, key, value)
        counts["rejected"] += 1
        metrics.DEAD_LETTERS.labels(stage, "unparseable_payload").inc()
        return
    for submission in submissions:
        prepared = privacy.apply(submission)
        send(topics.INGEST, key_of(prepared), json.dumps(prepared, ensure_ascii=False).encode())
        counts["events"] += 1
