"""The one emit path of every adapter: a raw submission -> the privacy policy -> its partition key -> its encoding
-> the ingest topic; what cannot be published becomes a dead letter with its reason and origin. With the ingest
metrics of the adapter's stage.

- :class:`IngestEncoder` (pure): privacy, key, encoding. The webhook service (adapters/service.py) uses it alone:
  a delivery whose submissions cannot be encoded is refused (400), never dead-lettered.
- :class:`StageMetrics`: ``satpulse_events_in_total{stage}``, ``satpulse_events_out_total{stage, kind}``,
  ``satpulse_dead_letters_total{stage, reason}`` for one stage.
- :class:`Emitter`: the two together with a synchronous ``send`` (Publisher.send, or a dry-run printer), for the
  file adapters (jsonl, channel files, the IMAP poller, the importer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from adapters.privacy import PrivacyPolicy
from domain.clean import entity_key
from satpulse import metrics, topics
from satpulse.deadletter import Origin, encode_dead_letter

Send = Callable[[str, bytes | None, bytes], None]  # topic, key, value (Publisher.send, or a dry-run printer)
Submission = dict[str, Any]


class Message(NamedTuple):
    """One Kafka message, as every publisher takes it."""

    topic: str
    key: bytes | None
    value: bytes


class IngestMessage(NamedTuple):
    """The ingest message of one submission and its ``kind`` metric label (``ticket`` or ``feedback``: bounded
    whatever a sender wrote)."""

    message: Message
    kind: str


class Unpublishable(ValueError):
    """A submission the emit path cannot turn into a message; ``reason`` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def key_of(submission: Submission) -> bytes | None:
    """Partition key: the key of the clean event it becomes (:func:`domain.clean.entity_key`: a case's events
    stay in order in one partition, and so do a rating's versions)."""
    key = entity_key(submission)
    return None if key is None else key.encode()


def encode_submission(submission: Submission) -> bytes:
    """Compact JSON with sorted keys, UTF-8 as is. Raises ValueError on a non-finite float (never written as
    NaN/Infinity: the cleaner reads strict JSON), TypeError on a value JSON has no form for."""
    return json.dumps(submission, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      allow_nan=False).encode()


def _strict_json(submission: Submission) -> bytes:
    """:func:`encode_submission`; raises :class:`Unpublishable` ``unparseable_payload`` for a non-finite float."""
    try:
        return encode_submission(submission)
    except ValueError as exc:  # "Out of range float values are not JSON compliant"
        raise Unpublishable("unparseable_payload", f"not strict JSON: {exc}") from exc


def kind_label(submission: Submission) -> str:
    return "ticket" if submission.get("kind") == "ticket" else "feedback"


@dataclass(frozen=True, slots=True)
class IngestEncoder:
    """Privacy policy, partition key and encoding of submissions for ``topic``. Pure, never blocks."""

    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    topic: str = field(default_factory=lambda: topics.INGEST)

    def encode(self, submission: Submission, as_read: bytes | None = None) -> IngestMessage:
        """The ingest message of ``submission`` with the privacy policy applied. ``as_read``, the submission's
        own bytes (a JSONL line), is published unchanged when the policy changes nothing. Raises
        :class:`Unpublishable` (reason ``unparseable_payload`` for a value strict JSON cannot carry, a non-finite
        float; ``processing_error`` for any other failure, naming the exception class), nothing else."""
        try:
            private = self.privacy.apply(submission)
            key = key_of(private)
            value = as_read if as_read is not None and private == submission else _strict_json(private)
        except Unpublishable:
            raise
        except Exception as exc:  # a defect of the policy, the key or a parser (a value JSON has no form for)
            raise Unpublishable("processing_error", f"{type(exc).__name__}: {exc}") from exc
        return IngestMessage(Message(self.topic, key, value), kind_label(private))


@dataclass(frozen=True, slots=True)
class StageMetrics:
    """The ingest metrics of one adapter stage (``jsonl``, ``import``, ``channel-KIND``, ``webhook``)."""

    stage: str

    def received(self, count: int = 1) -> None:
        """``count`` inputs entered the stage (a line, a row, a record; the webhook service: submissions)."""
        metrics.EVENTS_IN.labels(self.stage).inc(count)

    def passed_on(self, kind: str) -> None:
        """One submission of ``kind`` was handed to the ingest topic."""
        metrics.EVENTS_OUT.labels(self.stage, kind).inc()

    def dead_lettered(self, reason: str) -> None:
        metrics.DEAD_LETTERS.labels(self.stage, reason).inc()


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Emitter:
    """Publish or dead-letter, for the synchronous adapters. Every method hands its message to ``send`` and
    counts it; whatever ``send`` blocks on or raises (Publisher: back-pressure, KafkaTimeoutError) passes
    through, and nothing is acknowledged here -- the caller flushes (Publisher.flush raises PublishError)."""

    stage: str
    send: Send
    encoder: IngestEncoder = field(default_factory=IngestEncoder)
    dead_letter_topic: str = field(default_factory=lambda: topics.DEAD_LETTER)
    now_ms: Callable[[], int] = wall_clock_ms  # failed_at of dead letters
    stage_metrics: StageMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.stage_metrics = StageMetrics(self.stage)

    def received(self, count: int = 1) -> None:
        self.stage_metrics.received(count)

    def submission(self, submission: Submission, origin: Origin, payload: bytes,
                   as_read: bytes | None = None) -> str | None:
        """Publish ``submission`` (see :meth:`IngestEncoder.encode`); one that cannot be encoded becomes a dead
        letter of ``payload`` (the input it came from) from ``origin``. Returns None when published, else the
        dead-letter reason."""
        try:
            encoded = self.encoder.encode(submission, as_read)
        except Unpublishable as exc:
            self.dead_letter(exc.reason, exc.detail, payload, origin)
            return exc.reason
        self.send(*encoded.message)
        self.stage_metrics.passed_on(encoded.kind)
        return None

    def dead_letter(self, reason: str, detail: str, payload: bytes, origin: Origin) -> None:
        """Send ``payload`` to the dead-letter topic with ``reason`` and ``detail``, from ``origin``."""
        key, value = encode_dead_letter(reason, detail, self.stage, payload, origin, self.now_ms())
        self.send(self.dead_letter_topic, key, value)
        self.stage_metrics.dead_lettered(reason)
