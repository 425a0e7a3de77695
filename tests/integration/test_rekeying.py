"""A worker running every stage counts clean events without reading them back from Kafka, which relies on the
ingest topic being keyed like the clean topics. Ingest records keyed otherwise (another producer's choice)
must still be counted exactly once: they are re-published under their clean key and counted in the partition
that owns their rating. Topics that are not co-partitioned make the worker read the clean events back.
Real broker, chDB."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.emit import key_of
from adapters.publisher import ensure_topics
from devtools.sample import sample_submissions
from devtools.worker_process import WorkerProcess, metric_sum, wait_consumed
from satpulse import codec, topics
from satpulse.settings import get_settings
from sinks.clickhouse import connect
from sinks.queries import windows
from tests.integration.offline import SATISFIED, free_port, produce, read_records
from tests.integration.test_end_to_end import offline

pytestmark = pytest.mark.integration


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The Java client's default partition for a key, written out here (not aiokafka's or kafka-python's)."""
    from kafka.partitioner.default import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def run_worker(namespace: str, tmp_path: Path, consumed: list[str]) -> dict[Any, float]:
    """One worker (chDB under ``tmp_path``) until its group committed every message of ``consumed``; returns
    its /metrics samples."""
    port = free_port()
    worker = WorkerProcess({"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"g-{namespace}",
                            "SATPULSE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
                            "SATPULSE_WORKER_WEB_PORT": str(port)}, tmp_path / "worker.log", port)
    worker.start(timeout=90)
    try:
        wait_consumed(get_settings().kafka_bootstrap, f"g-{namespace}", consumed, 120, [worker])
        return worker.scrape()
    finally:
        worker.stop()


def stored_minutes(tmp_path: Path) -> dict[tuple[str, int], tuple[int, int]]:
    """(channel or "all", minute start) -> (rated, satisfied) of the stored 1-minute cells."""
    ch = connect(f"chdb://{tmp_path / 'chdb'}")
    try:
        return {(r.dimension_value, r.window_start): (r.agg.rated, r.agg.satisfied)
                for dimension in ("channel", "all") for r in windows(ch, dimension, 60)}
    finally:
        ch.close()


def test_wrongly_keyed_ingest_is_counted_once_in_the_right_partition(services: None, tmp_path: Path) -> None:
    namespace = f"rk-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    settings = get_settings()
    partitions = 4
    ensure_topics(settings.model_copy(update={"topic_partitions": partitions}), names.all())
    now_ms = int(time.time() * 1000)
    plain = list(sample_submissions(400, now_ms - 20 * 60_000, 19 * 60_000, seed=5))
    # edited ratings: version 0 unhappy, version 1 happy, two events of one rating keyed by their own event ids
    edits: list[dict[str, Any]] = []
    for i in range(40):
        base = {"kind": "feedback", "source": "test", "channel": "chat", "rating_scale": "1-5",
                "rating_id": f"edited-{i}", "event_time": now_ms - 5 * 60_000}
        edits.append({**base, "event_id": f"edited-{i}-v0", "rating_version": 0, "rating_value": 1})
        edits.append({**base, "event_id": f"edited-{i}-v1", "rating_version": 1, "rating_value": 5})
    # keyed by something else than their clean keys
    produce(names.ingest, [(f"not-{s['event_id']}".encode(), json.dumps(s).encode()) for s in plain + edits])
    samples = run_worker(namespace, tmp_path, [names.ingest])

    rekeyed = metric_sum(samples, "satpulse_events_out_total", stage="cleaner", kind="rekeyed")
    assert len(plain) / 2 < rekeyed <= len(plain) + len(edits)  # most of them landed in a foreign partition
    # every clean event was published once, in the partition of its key
    clean = read_records(names.feedback)
    assert len(clean) == len(plain) + len(edits)
    assert all(r.partition == murmur2_partition(r.key, partitions) for r in clean)
    # and counted once: each edited rating as its newest (happy) version
    expected = offline(plain)
    for edit in edits[1::2]:
        for key in (("chat", edit["event_time"] // 60_000 * 60), ("all", edit["event_time"] // 60_000 * 60)):
            rated, satisfied = expected.get(key, (0, 0))
            expected[key] = (rated + 1, satisfied + int(SATISFIED["1-5"](edit["rating_value"])))
    assert stored_minutes(tmp_path) == expected
    ch = connect(f"chdb://{tmp_path / 'chdb'}")
    try:
        positions = {row[0]: (int(row[1]), int(row[2])) for row in ch.query(
            f"SELECT event_id, source_partition, source_offset FROM {ch.database}.feedback_events FINAL")}
    finally:
        ch.close()
    # each event was counted under the very position the broker gave its clean event (not read back)
    assert positions == {codec.decode(r.value, codec.FEEDBACK_EVENT)[1]["event_id"]: (r.partition, r.offset)
                         for r in clean}


def test_topics_not_co_partitioned_fall_back_to_reading_clean_events_back(services: None, tmp_path: Path) -> None:
    namespace = f"rk-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    settings = get_settings()
    ensure_topics(settings.model_copy(update={"topic_partitions": 4}), [names.ingest])
    ensure_topics(settings.model_copy(update={"topic_partitions": 2}), names.all())
    now_ms = int(time.time() * 1000)
    submissions = list(sample_submissions(300, now_ms - 20 * 60_000, 19 * 60_000, seed=6))
    produce(names.ingest, [(key_of(s), json.dumps(s).encode()) for s in submissions])
    run_worker(namespace, tmp_path, [names.ingest, names.feedback, names.tickets])
    assert "partition counts differ" in (tmp_path / "worker.log").read_text()
    assert stored_minutes(tmp_path) == offline(submissions)
