"""``satpulse publish FILE`` (adapters/jsonl.py) applies the privacy policy like every other adapter
(docs/adapters.md): redaction of ``comment``, pseudonymised ``customer_id``; unparseable lines are still
dead-lettered as read. Kafka is replaced by an in-memory publisher."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from satpulse import cli, codec, topics
from satpulse.settings import get_settings

SUBMISSION = {"event_id": "e1", "channel": "email", "event_time": "2024-05-02T10:00:00Z", "score": 4,
              "customer_id": "cust-42", "comment": "write to jane.doe@example.com or call +41 44 668 18 00"}


Sent = list[tuple[str, bytes | None, bytes]]


class MemoryPublisher:
    """Stands in for adapters.publisher.Publisher: appends every (topic, key, value) to ``sent``."""

    def __init__(self, sent: Sent) -> None:
        self.sent = sent

    def __enter__(self) -> MemoryPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


@pytest.fixture
def publish(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Run ``satpulse publish`` on lines written to a file, with SATPULSE_* settings; returns what was sent."""
    sent: Sent = []
    monkeypatch.setattr("adapters.publisher.Publisher", lambda settings: MemoryPublisher(sent))
    monkeypatch.setattr("adapters.publisher.ensure_topics", lambda settings: None)

    def run(lines: list[bytes], **env: str) -> Sent:
        for name, value in env.items():
            monkeypatch.setenv(f"SATPULSE_{name.upper()}", value)
        get_settings.cache_clear()
        path = tmp_path / "in.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        assert cli.main(["publish", str(path)]) == 0
        return sent

    yield run
    get_settings.cache_clear()


def ingest(sent: Sent) -> list[dict[str, Any]]:
    return [json.loads(value) for topic, _, value in sent if topic == topics.INGEST]


def test_redaction_keeps_email_and_phone_out_of_the_published_message(publish: Any) -> None:
    sent = publish([json.dumps(SUBMISSION).encode()], redact_personal_data="true")
    [message] = ingest(sent)
    assert message["comment"] == "write to [email] or call [phone]"
    assert b"jane.doe@example.com" not in sent[0][2] and b"668 18 00" not in sent[0][2]
    assert message["customer_id"] == "cust-42" and sent[0][1] == b"e1"


def test_pseudonymisation_key_replaces_customer_id(publish: Any) -> None:
    [message] = ingest(publish([json.dumps(SUBMISSION).encode()], pseudonymisation_key="k1"))
    assert message["customer_id"] == hmac.new(b"k1", b"cust-42", hashlib.sha256).hexdigest()


def test_without_a_policy_lines_are_published_as_read(publish: Any) -> None:
    line = json.dumps(SUBMISSION, indent=None, separators=(",", ":")).encode()
    sent = publish([line], redact_personal_data="false")
    assert [(t, v) for t, _, v in sent] == [(topics.INGEST, line)]


def test_unparseable_line_still_goes_to_the_dead_letter_topic(publish: Any) -> None:
    sent = publish([b"{oops jane.doe@example.com", json.dumps(SUBMISSION).encode()], redact_personal_data="true")
    [(_, _, value)] = [s for s in sent if s[0] == topics.DEAD_LETTER]
    dead = codec.decode(value, codec.DEAD_LETTER)[1]
    assert dead["reason"] == "unparseable_payload" and dead["stage"] == "jsonl"
    assert [m["comment"] for m in ingest(sent)] == ["write to [email] or call [phone]"]
