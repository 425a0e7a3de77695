"""End to end on the real broker: JSONL adapter -> Kafka -> satpulse worker -> ClickHouse (chDB and the
ClickHouse server) and /metrics, compared with an offline computation written independently here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from devtools.sample import sample_submissions, write_jsonl
from devtools.worker_process import WorkerProcess, metric_sum
from satpulse import codec, topics
from satpulse.settings import get_settings
from sinks.clickhouse import connect
from sinks.queries import windows
from tests.integration.offline import CHANNEL, SATISFIED, free_port, read_topic

pytestmark = pytest.mark.integration

EVENTS = 1_500
MALFORMED = ('{"kind": "feedback", "event_id": ', "not json", "[1, 2, 3]")
# records that parse but fail validation, with the reason the cleaner must give
INVALID: list[tuple[dict[str, Any], str]] = [
    ({"event_id": "bad-1", "source": "t", "channel": "chat", "event_time": 1, "rating_value": 7,
      "rating_scale": "1-5"}, "invalid_rating"),
    ({"event_id": "bad-2", "source": "t", "channel": "chat", "event_time": 1, "rating_value": 3,
      "rating_scale": "stars"}, "unknown_scale"),
    ({"event_id": "bad-3", "source": "t", "channel": "chat", "event_time": 4_102_444_800, "rating_value": 3,
      "rating_scale": "1-5"}, "future_timestamp"),
    ({"source": "t", "channel": "chat", "event_time": 1, "rating_value": 3, "rating_scale": "1-5"},
     "missing_field"),
]




def offline(submissions: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[int, int]]:
    """(channel, minute start in s) -> (rated, satisfied), plus ("all", start)."""
    cells: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for s in submissions:
        minute = s["event_time"] // 60_000 * 60
        ok = SATISFIED[s["rating_scale"]](s["rating_value"])
        for key in ((CHANNEL[s["channel"]], minute), ("all", minute)):
            cells[key][0] += 1
            cells[key][1] += int(ok)
    return {k: (v[0], v[1]) for k, v in cells.items()}


# (engine, stage sets): one worker running every stage, or the stages split over two worker processes
SETUPS = {"chdb": ("chdb", [None]), "server": ("server", [None]),
          "chdb, two processes": ("chdb", [["clean"], ["window", "dead_letters"]])}


@pytest.fixture(params=list(SETUPS))
def setup(request: pytest.FixtureRequest, services: None, tmp_path: Path) -> tuple[str, list[list[str] | None]]:
    engine, stage_sets = SETUPS[request.param]
    if engine == "chdb":
        return f"chdb://{tmp_path / 'chdb'}", stage_sets
    port = get_settings().clickhouse_native_port
    return f"clickhouse://default:@127.0.0.1:{port}/e2e_{uuid.uuid4().hex[:8]}", stage_sets


def scrape_all(workers: list[WorkerProcess]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every worker's samples added up (each stage's metrics come from the process that runs it)."""
    total: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for worker in workers:
        for key, value in worker.scrape().items():
            total[key] = total.get(key, 0.0) + value
    return total


def test_jsonl_to_clickhouse_and_metrics(setup: tuple[str, list[list[str] | None]], tmp_path: Path) -> None:
    clickhouse_url, stage_sets = setup
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    now_ms = int(time.time() * 1000)
    submissions = list(sample_submissions(EVENTS, now_ms - 20 * 60_000, 19 * 60_000, seed=11))
    path = tmp_path / "in.jsonl"
    write_jsonl(path, iter(submissions + [r for r, _ in INVALID]), MALFORMED)
    expected = offline(submissions)

    workers = []
    for i, stages in enumerate(stage_sets):
        port = free_port()
        env = {"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"w-{namespace}",
               "SATPULSE_CLICKHOUSE_URL": clickhouse_url, "SATPULSE_WORKER_WEB_PORT": str(port),
               "SATPULSE_IDLE_SECONDS": "2", "SATPULSE_GRACE_SECONDS": "5",
               "SATPULSE_ROLLING_REFRESH_SECONDS": "1"}
        if stages is not None:
            env["SATPULSE_WORKER_STAGES"] = json.dumps(stages)
        workers.append(WorkerProcess(env, tmp_path / f"worker{i}.log", port))
    try:
        for worker in workers:
            worker.start(timeout=90)
        published = subprocess.run([sys.executable, "-m", "satpulse.cli", "publish", str(path)],
                                   env=workers[0].env, check=True, capture_output=True, text=True, timeout=120)
        assert f"published {EVENTS + len(INVALID)}" in published.stdout
        assert "unparseable_payload 3" in published.stdout
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            samples = scrape_all(workers)
            if metric_sum(samples, "satpulse_feedback_rated_total") >= EVENTS:
                break
            time.sleep(0.5)
        time.sleep(6)  # idle: the watermark passes the last window + grace and final windows are emitted
        samples = scrape_all(workers)
    finally:
        for worker in workers:
            worker.stop()
    log = "".join(p.read_text() for p in sorted(tmp_path.glob("worker*.log")))

    # /metrics: counters per channel equal the offline totals; the gauge shows each channel's last window
    for channel in set(CHANNEL.values()):
        rated = sum(v[0] for (c, _), v in expected.items() if c == channel)
        satisfied = sum(v[1] for (c, _), v in expected.items() if c == channel)
        assert metric_sum(samples, "satpulse_feedback_rated_total", channel=channel) == rated, log[-3000:]
        assert metric_sum(samples, "satpulse_feedback_satisfied_total", channel=channel) == satisfied
        last = max(m for (c, m) in expected if c == channel)
        r, s = expected[(channel, last)]
        gauge = metric_sum(samples, "satpulse_window_csat_percent", dimension="channel", value=channel)
        assert gauge == pytest.approx(100 * s / r), (metric_sum(samples, "satpulse_late_events_total"), log[-3000:])
        # every event is from the last 20 minutes: the rolling 1 h and 24 h gauges hold all of the channel
        for period in ("1h", "24h"):
            labels = {"dimension": "channel", "value": channel, "period": period}
            assert metric_sum(samples, "satpulse_rolling_rated", **labels) == rated
            assert metric_sum(samples, "satpulse_rolling_csat_percent", **labels) == pytest.approx(
                100 * satisfied / rated)
    assert metric_sum(samples, "satpulse_events_out_total", stage="window") == EVENTS
    assert metric_sum(samples, "satpulse_consumer_lag_messages") == 0
    dead = {dict(labels)["reason"]: v for (n, labels), v in samples.items() if n == "satpulse_dead_letters_total"}
    assert dead == dict(Counter(reason for _, reason in INVALID))

    # ClickHouse: every (channel, minute) cell equals the offline answer exactly
    ch = connect(clickhouse_url)
    try:
        stored = {(r.dimension_value, r.window_start): (r.agg.rated, r.agg.satisfied)
                  for r in windows(ch, "channel", 60)}
        stored_all = {("all", r.window_start): (r.agg.rated, r.agg.satisfied) for r in windows(ch, "all", 60)}
        events, scored = ch.query(
            f"SELECT count(), countIf(score IS NOT NULL) FROM {ch.database}.feedback_events FINAL")[0]
    finally:
        ch.close()
    assert {**stored, **stored_all} == expected
    assert int(events) == EVENTS
    assert metric_sum(samples, "satpulse_feedback_score_count") == int(scored) > 0

    # the dead-letter topic holds every refused input with its reason and origin
    letters = [codec.decode(value, codec.DEAD_LETTER)[1]
               for _, value in read_topic(topics.for_namespace(namespace).dead_letter)]
    assert Counter(d["reason"] for d in letters) == Counter(
        ["unparseable_payload"] * len(MALFORMED) + [reason for _, reason in INVALID])
    for d in letters:
        assert d["origin_ref"] or (d["origin_topic"] and d["origin_offset"] is not None)
    refs = {d["origin_ref"].rsplit(":", 1)[0] for d in letters if d["origin_ref"]}
    assert refs == {str(path)}
    assert {json.loads(d["payload"]).get("event_id") for d in letters if d["stage"] == "cleaner"} == {
        "bad-1", "bad-2", "bad-3", None}
