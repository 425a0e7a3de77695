"""Dead letters in ClickHouse: the store on both engines (bytes kept exactly, each origin once after retries
and replays), and the worker's dead-letter agent end to end on the real broker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from devtools.worker_process import WorkerProcess, metric_sum
from satpulse import topics
from satpulse.deadletter import Origin, encode_dead_letter
from satpulse.settings import get_settings
from sinks.clickhouse import ClickHouse, connect
from sinks.dead_letter_store import DeadLetterStore
from tests.integration.offline import clickhouse_url, free_port

pytestmark = pytest.mark.integration

BINARY = bytes(range(256)) + "é漢字🙂".encode()
HOSTILE = "x'); DROP TABLE dead_letters; -- \\N\t%(t)s"


def test_dead_letters_stored_verbatim_once_per_origin(ch: ClickHouse) -> None:
    kafka = encode_dead_letter("negative_duration", HOSTILE, "window", BINARY, Origin("in.v1", 3, 42),
                               1_767_225_600_123)[1]
    kafka_again = encode_dead_letter("negative_duration", HOSTILE, "window", BINARY, Origin("in.v1", 3, 42),
                                     1_767_225_601_000)[1]  # produced twice (a retried batch), later clock
    file = encode_dead_letter("unparseable_payload", "not JSON", "jsonl", b"{oops", Origin(ref="/x/in.jsonl:7"),
                              1_767_225_600_000)[1]
    garbage = b"\x00not a dead letter\xff"
    store = DeadLetterStore(ch)
    for value, offset in ((kafka, 0), (file, 1), (garbage, 2)):
        store.add(value, "dl.v1", 0, offset)
    assert len(store) == 3 and store.flush() == 3 and len(store) == 0
    for value, offset in ((kafka, 0), (file, 1), (garbage, 2), (kafka_again, 3)):  # replay + duplicate
        store.add(value, "dl.v1", 0, offset)
    store.flush()

    rows = ch.query(
        "SELECT origin_topic, origin_partition, origin_offset, origin_ref, stage, reason, detail, hex(payload), "
        f"failed_at_ms FROM {ch.database}.dead_letters FINAL ORDER BY origin_topic, origin_ref")
    assert [r[:6] for r in rows] == [
        ("", -1, -1, "/x/in.jsonl:7", "jsonl", "unparseable_payload"),
        ("dl.v1", 0, 2, "", "sink", "unparseable_payload"),
        ("in.v1", 3, 42, "", "window", "negative_duration")]
    assert rows[2][6] == HOSTILE and bytes.fromhex(rows[2][7]) == BINARY
    assert bytes.fromhex(rows[1][7]) == garbage and "C3 01" in rows[1][6]
    assert bytes.fromhex(rows[0][7]) == b"{oops" and int(rows[0][8]) == 1_767_225_600_000


def test_worker_stores_dead_letters(services: Any, tmp_path: Path) -> None:
    namespace = f"dl-{uuid.uuid4().hex[:8]}"
    url = clickhouse_url("server", tmp_path, "dle2e")
    port = free_port()
    env = {"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"w-{namespace}",
           "SATPULSE_CLICKHOUSE_URL": url, "SATPULSE_WORKER_WEB_PORT": str(port)}
    worker = WorkerProcess(env, tmp_path / "worker.log", port)
    worker.start(timeout=90)
    ingest = topics.for_namespace(namespace).ingest
    bad = [(b"not json", "unparseable_payload"),
           (json.dumps({"event_id": "b1", "source": "t", "channel": "chat", "event_time": 1, "rating_value": 9,
                        "rating_scale": "1-5"}).encode(), "invalid_rating")]
    try:
        producer = KafkaProducer(bootstrap_servers=get_settings().kafka_bootstrap, acks="all")
        sent = [producer.send(ingest, value).get(timeout=30) for value, _ in bad]
        producer.close()
        deadline = time.monotonic() + 60
        while metric_sum(worker.scrape(), "satpulse_events_in_total", stage="dead_letter_sink") < len(bad):
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.3)
    finally:
        worker.stop()
    ch = connect(url)
    try:
        rows = ch.query(f"SELECT origin_topic, origin_partition, origin_offset, stage, reason, hex(payload) "
                        f"FROM {ch.database}.dead_letters FINAL ORDER BY origin_partition, origin_offset")
    finally:
        ch.close()
    expected = sorted((ingest, m.partition, m.offset, "cleaner", reason, value.hex().upper())
                      for m, (value, reason) in zip(sent, bad, strict=True))
    assert sorted(rows) == expected
