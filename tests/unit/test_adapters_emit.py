"""The emit path every adapter shares (adapters/emit.py): privacy policy -> key -> strict JSON -> the ingest
topic, or a dead letter with reason and origin when a submission cannot be published; the stage's metrics; and
publish failures passed to the caller as before (the file adapters raise, the webhook service answers 503)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from pydantic import SecretStr

from adapters.channels import emit_outcome
from adapters.emit import Emitter, IngestEncoder, Unpublishable
from adapters.jsonl import publish_jsonl
from adapters.privacy import PrivacyPolicy
from satpulse import codec, metrics
from satpulse.deadletter import Origin

Sent = list[tuple[str, bytes | None, bytes]]
RATING = {"kind": "feedback", "event_id": "e-1", "rating_id": "r-1", "source": "s", "channel": "email",
          "event_time": "2025-01-01T00:00:00Z", "rating_value": 4, "rating_scale": "1-5",
          "comment": "mail jane@example.com", "customer_id": "c-1"}
ORIGIN = Origin(ref="export.csv:7")


class BrokenPolicy(PrivacyPolicy):
    def apply(self, submission: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("boom")


def sample(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def emitter(sent: Sent, stage: str = "test-emit", privacy: PrivacyPolicy | None = None) -> Emitter:
    return Emitter(stage, lambda topic, key, value: sent.append((topic, key, value)),
                   IngestEncoder(privacy or PrivacyPolicy(), "t.ingest"), "t.dead", now_ms=lambda: 1234)


def dead_letters(sent: Sent) -> list[dict[str, Any]]:
    return [codec.decode(value, codec.DEAD_LETTER)[1] for topic, _, value in sent if topic == "t.dead"]


def test_a_submission_is_published_with_the_policy_its_key_and_strict_json() -> None:
    sent: Sent = []
    out = sample("satpulse_events_out_total", {"stage": "test-emit", "kind": "feedback"})
    reason = emitter(sent, privacy=PrivacyPolicy(redact=True, key=SecretStr("k"))).submission(
        RATING, ORIGIN, b"row")
    assert reason is None
    [(topic, key, value)] = sent
    published = json.loads(value)
    assert (topic, key) == ("t.ingest", b"r-1")  # keyed by the clean event's key: the rating id
    assert published["comment"] == "mail [email]" and published["customer_id"] != "c-1"
    assert value == json.dumps(published, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    assert sample("satpulse_events_out_total", {"stage": "test-emit", "kind": "feedback"}) == out + 1


def test_bytes_as_read_are_kept_when_the_policy_changes_nothing() -> None:
    encoder = IngestEncoder(PrivacyPolicy(), "t.ingest")
    assert encoder.encode(RATING, as_read=b"as read").message.value == b"as read"
    redacting = IngestEncoder(PrivacyPolicy(redact=True), "t.ingest")
    assert json.loads(redacting.encode(RATING, as_read=b"as read").message.value)["comment"] == "mail [email]"


def test_the_kind_label_is_bounded() -> None:
    encoder = IngestEncoder(PrivacyPolicy(), "t.ingest")
    assert [encoder.encode(dict(RATING, kind=kind)).kind for kind in ("ticket", "feedback", "x" * 300)] == [
        "ticket", "feedback", "feedback"]


def test_a_submission_that_cannot_be_encoded_becomes_a_dead_letter_with_reason_and_origin() -> None:
    sent: Sent = []
    dead_before = sample("satpulse_dead_letters_total", {"stage": "test-emit", "reason": "unparseable_payload"})
    reason = emitter(sent).submission(dict(RATING, rating_value=math.nan), ORIGIN, b"the row as read")
    assert reason == "unparseable_payload"
    [letter] = dead_letters(sent)
    assert (letter["reason"], letter["stage"], letter["origin_ref"], letter["payload"], letter["failed_at"]) == (
        "unparseable_payload", "test-emit", "export.csv:7", b"the row as read", 1234)
    assert "not strict JSON" in letter["detail"]
    assert [topic for topic, _, _ in sent] == ["t.dead"]  # nothing reached the ingest topic
    assert sample("satpulse_dead_letters_total", {"stage": "test-emit", "reason": "unparseable_payload"}) == (
        dead_before + 1)


def test_a_submission_the_policy_fails_on_becomes_a_processing_error_dead_letter() -> None:
    sent: Sent = []
    assert emitter(sent, privacy=BrokenPolicy()).submission(RATING, ORIGIN, b"row") == "processing_error"
    [letter] = dead_letters(sent)
    assert letter["reason"] == "processing_error" and letter["origin_ref"] == "export.csv:7"
    assert letter["detail"].startswith("KeyError")
    with pytest.raises(Unpublishable) as refused:
        IngestEncoder(BrokenPolicy(), "t.ingest").encode(RATING)
    assert refused.value.reason == "processing_error"


def test_a_channel_record_with_an_unpublishable_submission_counts_as_rejected() -> None:
    sent: Sent = []
    counts: Counter[str] = Counter()
    outcome = ("calls.json:3", [RATING, dict(RATING, event_id="e-2", rating_id="r-2", rating_value=math.inf)],
               None, b"record")
    emit_outcome(outcome, emitter(sent, "channel-test"), counts)
    assert counts == Counter(records=1, events=1, rejected=1)
    assert [letter["origin_ref"] for letter in dead_letters(sent)] == ["calls.json:3"]


class FailingPublisher:
    """Publisher.send when Kafka stays unreachable: KafkaTimeoutError."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        raise KafkaTimeoutError("no metadata")


def test_a_publish_failure_reaches_the_caller_uncounted() -> None:
    sent: Sent = []
    failing = Emitter("test-emit-fail", FailingPublisher().send, IngestEncoder(PrivacyPolicy(), "t.ingest"))
    with pytest.raises(KafkaTimeoutError):
        failing.submission(RATING, ORIGIN, b"row")
    assert sample("satpulse_events_out_total", {"stage": "test-emit-fail", "kind": "feedback"}) == 0
    assert sent == []


def test_jsonl_publishing_raises_the_publish_failure(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(RATING) + "\n")
    with pytest.raises(KafkaTimeoutError):
        publish_jsonl(path, FailingPublisher(), PrivacyPolicy())  # type: ignore[arg-type]
