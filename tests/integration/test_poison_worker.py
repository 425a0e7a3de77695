"""Poison-proof on the real broker: hostile messages interleaved with valid events never stop, stall or crash
the worker; each is dead-lettered exactly once, the valid events are counted exactly, and the worker stops
cleanly on SIGTERM. And the window stage's dead letters survive kill -9 at any point."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from adapters.publisher import ensure_topics
from devtools.sample import sample_submissions, sample_ticket_events
from devtools.worker_process import WorkerProcess, wait_consumed
from satpulse import codec, topics
from satpulse.settings import Settings, get_settings
from sinks.clickhouse import connect
from tests.integration.offline import clickhouse_url, free_port, keyed, produce, read_records
from tests.integration.test_workers import offline, stored
from tests.poison import poison_corpus

pytestmark = pytest.mark.integration


def valid_events(count: int, cases: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    now_ms = int(time.time() * 1000)
    return (list(sample_submissions(count, now_ms - 4 * 3600_000, 3600_000, seed=seed)),
            list(sample_ticket_events(cases, now_ms - 4 * 3600_000, 3600_000, seed=seed)))


def start_worker(tmp_path: Path, url: str, namespace: str) -> WorkerProcess:
    group = f"g-{namespace}"
    port = free_port()
    env = {"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": group, "SATPULSE_CLICKHOUSE_URL": url,
           "SATPULSE_FLUSH_MAX_ROWS": "500", "SATPULSE_FLUSH_MAX_AGE_SECONDS": "0.2",
           "SATPULSE_WORKER_WEB_PORT": str(port)}
    worker = WorkerProcess(env, tmp_path / "worker.log", port)
    worker.start(timeout=90)
    return worker


def stored_dead_letters(url: str, origin_topic: str) -> Counter[tuple[int, int, str]]:
    """(partition, offset, reason) of every stored dead letter from ``origin_topic``, with its row count."""
    ch = connect(url)
    try:
        rows = ch.query(f"SELECT origin_partition, origin_offset, reason FROM {ch.database}.dead_letters FINAL "
                        "WHERE origin_topic = %(topic)s", {"topic": origin_topic})
    finally:
        ch.close()
    return Counter((int(p), int(o), str(r)) for p, o, r in rows)


@pytest.mark.parametrize("engine", ["chdb", "server"])
def test_poison_corpus_interleaved_with_valid_events(services: Any, tmp_path: Path, engine: str) -> None:
    namespace = f"p-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    ensure_topics(Settings(topic_namespace=namespace), names.all())
    url = clickhouse_url(engine, tmp_path, "poison")
    feedback, tickets = valid_events(1_500, 200, seed=5)
    valid = [keyed(s) for s in feedback + tickets]
    corpus = poison_corpus()
    rng = random.Random(5)
    messages: list[tuple[str | None, tuple[bytes | None, bytes]]] = [(None, v) for v in valid]
    for name, payload in corpus:  # spread through the valid events
        messages.insert(rng.randrange(len(messages) + 1), (name, (name.encode()[:100], payload)))
    worker = start_worker(tmp_path, url, namespace)
    try:
        positions = produce(names.ingest, [m for _, m in messages])
        wait_consumed(get_settings().kafka_bootstrap, f"g-{namespace}", [names.ingest], 240, [worker])
        assert worker.proc is not None and worker.proc.poll() is None, "the worker exited"
        # every poison message: one dead letter on the topic, keyed by its origin
        poison_keys = {f"{names.ingest}/{p}/{o}".encode(): name
                       for (name, _), (p, o) in zip(messages, positions, strict=True) if name is not None}
        letters = Counter(r.key for r in read_records(names.dead_letter) if r.key in poison_keys)
        assert {poison_keys[k] for k in letters} == {name for name, _ in corpus}
        assert set(letters.values()) == {1}
        started = time.monotonic()
        worker.stop(timeout=10)  # SIGTERM; escalates to SIGKILL after 10 s
        assert worker.proc.returncode == 0, f"stopped in {time.monotonic() - started:.1f} s with " \
                                            f"{worker.proc.returncode}; see {worker.log_path}"
    finally:
        worker.stop()
    assert stored(url) == offline(feedback, tickets)
    dead = stored_dead_letters(url, names.ingest)
    assert sorted((p, o) for p, o, _ in dead) == sorted(positions[i] for i, (n, _) in enumerate(messages) if n)
    assert "processing_error" not in {reason for _, _, reason in dead}
    ch = connect(url)
    try:  # large payloads are stored as their first 64 KiB, with the whole one's size and hash
        [(largest, longest, hashed)] = ch.query(
            f"SELECT max(payload_size), max(length(payload)), countIf(length(payload_sha256) = 64) "
            f"FROM {ch.database}.dead_letters FINAL WHERE origin_topic = %(topic)s", {"topic": names.ingest})
    finally:
        ch.close()
    assert (int(longest), int(hashed)) == (64 * 1024, len(corpus)) and int(largest) > 900_000


BAD_CHANNEL = "sms"  # no valid sample event uses it: the offline answer covers the other channels


def bad_case(i: int, start_ms: int) -> list[dict[str, Any]]:
    """A case resolved before it was created (every second one) or after more than a year."""
    created = start_ms + i * 1000
    resolved = created - 600_000 if i % 2 else created + 400 * 86400_000
    if resolved > time.time() * 1000:
        created, resolved = created - 401 * 86400_000, created
    base = {"kind": "ticket", "source": "export", "channel": BAD_CHANNEL, "ticket_id": f"bad-{i}"}
    return [{**base, "event_id": f"bad-{i}-c", "status": "created", "event_time": created},
            {**base, "event_id": f"bad-{i}-r", "status": "resolved", "event_time": resolved}]


@pytest.mark.parametrize("engine", ["chdb", "server"])
def test_window_dead_letters_survive_kill_9(services: Any, tmp_path: Path, engine: str) -> None:
    """Quarantined cases among valid events, the worker killed with SIGKILL at random points: every one of
    them reaches the dead-letter topic and the dead-letter table (the window stage publishes them before it
    writes the batch), and every cell is exact."""
    namespace = f"k-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    ensure_topics(Settings(topic_namespace=namespace), names.all())
    url = clickhouse_url(engine, tmp_path, "kill")
    feedback, tickets = valid_events(8_000, 1_000, seed=11)
    start_ms = int(time.time() * 1000) - 3 * 3600_000
    bad = [e for i in range(300) for e in bad_case(i, start_ms)]
    events = feedback + tickets + bad
    random.Random(11).shuffle(events)
    worker = start_worker(tmp_path, url, namespace)
    rng = random.Random(11)
    try:
        produce(names.ingest, [keyed(s) for s in events])
        for _ in range(8):
            time.sleep(rng.uniform(0.3, 2.0))
            worker.stop(kill=True)
            worker.start(timeout=90)
        wait_consumed(get_settings().kafka_bootstrap, f"g-{namespace}", [names.ingest], 240, [worker])
    finally:
        worker.stop()
    assert {k: v for k, v in stored(url).items() if k != BAD_CHANNEL} == offline(feedback, tickets)
    on_topic = window_letters([r.value for r in read_records(names.dead_letter)])
    assert set(on_topic) == {f"bad-{i}" for i in range(300)}
    assert {on_topic[f"bad-{i}"] for i in range(0, 300, 2)} == {"absurd_duration"}
    assert {on_topic[f"bad-{i}"] for i in range(1, 300, 2)} == {"negative_duration"}
    ch = connect(url)
    try:
        rows = ch.query(f"SELECT reason, hex(payload) FROM {ch.database}.dead_letters FINAL WHERE stage = 'window'")
    finally:
        ch.close()
    assert {codec.decode(bytes.fromhex(payload), codec.TICKET_EVENT)[1]["ticket_id"]: reason
            for reason, payload in rows} == on_topic


def window_letters(values: list[bytes]) -> dict[str, str]:
    """ticket id -> reason of the window stage's dead letters among dead-letter messages."""
    out = {}
    for value in values:
        letter = codec.decode(value, codec.DEAD_LETTER)[1]
        if letter["stage"] == "window":
            out[codec.decode(letter["payload"], codec.TICKET_EVENT)[1]["ticket_id"]] = letter["reason"]
    return out
