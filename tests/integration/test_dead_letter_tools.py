"""``satpulse dead-letters`` on the real broker and ClickHouse: summary counts, one origin shown with its payload,
size and hash, and replay to the ingest topic: once per origin (a second replay sends nothing), keyed like an
adapter keys it, truncated payloads and letters of other stages skipped and reported; end to end, a dead letter
the worker refused is counted once after a fix even when replayed twice."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.dead_letter_replay import plan_replay, send_replay
from adapters.publisher import Publisher, ensure_topics
from devtools.worker_process import WorkerProcess, wait_consumed
from domain.clean import Rejected, clean
from satpulse import topics
from satpulse.deadletter import Origin, encode_dead_letter
from satpulse.settings import Settings, get_settings
from sinks.clickhouse import ClickHouse, connect
from sinks.dead_letter_store import DeadLetterStore
from sinks.dead_letter_tools import find, format_letter, format_summary, summary
from sinks.queries import totals
from tests.integration.offline import clickhouse_url, free_port, read_records

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FUTURE = {"event_id": "fx-1", "source": "survey", "channel": "Web", "rating_value": 5, "rating_scale": "1-5",
          "event_time": NOW_MS + 3600_000}  # an hour ahead of NOW_MS: refused by the default 5 min tolerance
TICKET = {"kind": "ticket", "event_id": "tk-1", "ticket_id": "T-9", "source": "desk", "channel": "email",
          "status": "created", "event_time": NOW_MS}


def store_dead_letters(ch: ClickHouse, ingest: str, feedback: str) -> dict[str, bytes]:
    """Dead letters of every kind the tools tell apart, stored as the worker's dead-letter stage stores them;
    returns the payloads by name."""
    payloads = {"future": json.dumps(FUTURE).encode(), "ticket": json.dumps(TICKET).encode(),
                "large": json.dumps({**FUTURE, "comment": "x" * 500}).encode(), "garbage": b"\xff not json",
                "row": b'{"Ticket ID": "7"}', "avro": b"\xc3\x01\x00avro"}
    letters = [
        ("future_timestamp", "cleaner", payloads["future"], Origin(ingest, 0, 10), 1 << 20),
        ("invalid_rating", "cleaner", payloads["future"], Origin(ingest, 0, 10), 1 << 20),  # same origin again
        ("unknown_status", "cleaner", payloads["ticket"], Origin(ingest, 1, 3), 1 << 20),
        ("too_large", "cleaner", payloads["large"], Origin(ingest, 0, 11), 100),  # kept: the first 100 bytes
        ("unparseable_payload", "cleaner", payloads["garbage"], Origin(ingest, 1, 4), 1 << 20),
        ("negative_duration", "import", payloads["row"], Origin(ref="/data/x.csv:7"), 1 << 20),
        ("negative_duration", "window", payloads["avro"], Origin(feedback, 0, 4), 1 << 20),
    ]
    store = DeadLetterStore(ch)
    for offset, (reason, stage, payload, origin, keep) in enumerate(letters):
        failed_at = NOW_MS + offset * 1000  # one a second
        store.add(encode_dead_letter(reason, f"detail {offset}", stage, payload, origin, failed_at, keep)[1], "dl.v1",
                  0, offset)
    store.flush()
    return payloads


def test_summary_show_and_replay_once(ch: ClickHouse) -> None:
    namespace = f"dlt-{uuid.uuid4().hex[:8]}"
    names, settings = topics.for_namespace(namespace), Settings(topic_namespace=namespace)
    ensure_topics(settings, [names.ingest])
    payloads = store_dead_letters(ch, names.ingest, names.feedback)

    counts = summary(ch)
    assert counts.total == 7
    assert {(r.stage, r.reason): (r.count, r.truncated, r.replayed) for r in counts.by_reason} == {
        ("cleaner", "future_timestamp"): (1, 0, 0), ("cleaner", "invalid_rating"): (1, 0, 0),
        ("cleaner", "unknown_status"): (1, 0, 0), ("cleaner", "too_large"): (1, 1, 0),
        ("cleaner", "unparseable_payload"): (1, 0, 0), ("import", "negative_duration"): (1, 0, 0),
        ("window", "negative_duration"): (1, 0, 0)}
    assert counts.by_source == [(names.ingest, 5), ("/data/x.csv", 1), (names.feedback, 1)]
    assert summary(ch, NOW_MS // 1000 + 5).total == 2  # --since: the last two
    assert "dead letters: 7\n" in format_summary(counts)

    shown = find(ch, [f"{names.ingest}/0/11"])
    assert len(shown) == 1 and shown[0].truncated
    assert (shown[0].payload, shown[0].payload_size) == (payloads["large"][:100], len(payloads["large"]))
    assert shown[0].payload_sha256 == hashlib.sha256(payloads["large"]).hexdigest()
    text = format_letter(shown[0])
    assert f"100 of {len(payloads['large'])} bytes kept (truncated" in text and shown[0].payload_sha256 in text
    assert "payload (hex):\n" + payloads["avro"].hex() in format_letter(find(ch, [f"{names.feedback}/0/4"])[0])
    assert [letter.reason for letter in find(ch, ["/data/x.csv:7"])] == ["negative_duration"]
    assert find(ch, ["/data/x.csv"]) == [] and len(find(ch, ["/data/x.csv"], exact=False)) == 1

    plan = plan_replay(find(ch))
    assert sorted(letter.origin for letter, _ in plan.send) == [f"{names.ingest}/0/10", f"{names.ingest}/1/3"]
    assert [letter.origin for letter in plan.truncated] == [f"{names.ingest}/0/11"]
    assert [letter.origin for letter in plan.not_a_submission] == [f"{names.ingest}/1/4"]
    assert sorted(letter.stage for letter in plan.other_stage) == ["import", "window"]
    assert plan.duplicate_origin == 1
    with Publisher(settings) as publisher:
        assert send_replay(plan, publisher, ch, names.ingest) == 2
    sent = sorted((r.key, r.value) for r in read_records(names.ingest))
    assert sent == [(b"T-9", payloads["ticket"]), (b"fx-1", payloads["future"])]  # entity keys, bytes unchanged
    with pytest.raises(Rejected, match="future_timestamp"):
        clean(json.loads(payloads["future"]), NOW_MS, 300_000)
    assert clean(json.loads(payloads["future"]), NOW_MS, 7200_000).record["event_id"] == "fx-1"  # after the fix

    again = plan_replay(find(ch))
    assert again.send == [] and len(again.already_replayed) == 2
    assert "sent 0 to" in again.describe(names.ingest, dry_run=False)
    assert "already replayed 2" in again.describe(names.ingest, dry_run=False)
    assert len(read_records(names.ingest)) == 2
    assert {(r.stage, r.reason): r.replayed for r in summary(ch).by_reason}[("cleaner", "invalid_rating")] == 1
    assert len(plan_replay(find(ch, reason="future_timestamp"), again=True).send) == 1


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "satpulse.cli", "dead-letters", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_worker(tmp_path: Path, env: dict[str, str], tolerance_s: int) -> WorkerProcess:
    port = free_port()
    worker = WorkerProcess({**env, "SATPULSE_FUTURE_TOLERANCE_SECONDS": str(tolerance_s),
                            "SATPULSE_WORKER_WEB_PORT": str(port), "SATPULSE_FLUSH_MAX_AGE_SECONDS": "0.2"},
                           tmp_path / f"worker-{tolerance_s}.log", port)
    worker.start(timeout=90)
    return worker


def run_worker_over(tmp_path: Path, env: dict[str, str], tolerance_s: int, ingest: str) -> None:
    """A worker with that future tolerance consumes everything on the ingest topic, then stops."""
    worker = start_worker(tmp_path, env, tolerance_s)
    try:
        wait_consumed(get_settings().kafka_bootstrap, env["SATPULSE_WORKER_ID"], [ingest], 120, [worker])
    finally:
        worker.stop()


def test_replayed_after_a_fix_counts_once(services: Any, tmp_path: Path) -> None:
    """The worker dead-letters a rating stamped two hours ahead; with the tolerance raised, ``replay`` sends it
    once (a second replay sends nothing, ``--again`` sends it again) and the worker counts it once."""
    namespace = f"dlr-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    url = clickhouse_url("server", tmp_path, "dlr")
    env = {"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"g-{namespace}",
           "SATPULSE_CLICKHOUSE_URL": url}
    ensure_topics(Settings(topic_namespace=namespace), names.all())
    now_ms = int(time.time() * 1000)
    ahead = {**FUTURE, "event_time": now_ms + 2 * 3600_000}
    valid = {**FUTURE, "event_id": "ok-1", "event_time": now_ms}
    with Publisher(get_settings()) as publisher:
        for submission in (ahead, valid):
            publisher.send(names.ingest, submission["event_id"].encode(), json.dumps(submission).encode())
    run_worker_over(tmp_path, env, 300, names.ingest)

    lines = [line.split() for line in cli(env, "summary").splitlines()]
    assert ["cleaner", "future_timestamp", "1", "0", "0"] in lines and [names.ingest, "1"] in lines
    [letter] = find_all(url)
    assert f"origin     {letter.origin}\n" in cli(env, "show", letter.origin)
    assert cli(env, "replay", "--dry-run").startswith(f"would send {letter.origin} (cleaner future_timestamp")
    assert len(read_records(names.ingest)) == 2
    assert cli(env, "replay", "--reason", "future_timestamp").splitlines()[-1].startswith(f"sent 1 to {names.ingest}")
    assert "sent 0 to" in cli(env, "replay") and len(read_records(names.ingest)) == 3
    assert "sent 1 to" in cli(env, "replay", "--again", "--origin", names.ingest)
    assert len(read_records(names.ingest)) == 4

    run_worker_over(tmp_path, env, 86400, names.ingest)  # the fix: a day of tolerance
    ch = connect(url)
    try:
        assert [(r.agg.rated, r.agg.satisfied) for r in totals(ch, "all", 60)] == [(2, 2)]  # ok-1 and fx-1 once
    finally:
        ch.close()


def find_all(url: str) -> list[Any]:
    ch = connect(url)
    try:
        return find(ch)
    finally:
        ch.close()
