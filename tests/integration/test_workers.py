"""Worker processes on the real broker: two workers give the same totals as the offline answer, and a
worker killed with SIGKILL at random points and restarted neither loses nor double-counts (in the style of
ClickHouse Kafka Connect's ExactlyOnceTest)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.publisher import ensure_topics
from devtools import services as local_services
from devtools.sample import sample_submissions, sample_ticket_events, write_jsonl
from devtools.worker_process import FAUST_WORKER, SATPULSE_WORKER, WorkerProcess, metric_sum, wait_consumed
from satpulse import topics
from satpulse.settings import Settings, get_settings
from sinks.clickhouse import connect
from sinks.queries import totals, windows
from tests.integration.offline import CHANNEL, SATISFIED, free_port, keyed, produce

pytestmark = pytest.mark.integration




def offline(feedback: list[dict[str, Any]], tickets: list[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """channel -> (rated, satisfied, created, resolved, resolution ms sum), written independently."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for s in feedback:
        acc = out[CHANNEL[s["channel"]]]
        acc[0] += 1
        acc[1] += SATISFIED[s["rating_scale"]](s["rating_value"])
    cases: dict[str, dict[str, Any]] = defaultdict(lambda: {"resolved": []})
    for t in tickets:
        case = cases[t["ticket_id"]]
        case["channel"] = CHANNEL[t["channel"]]
        if t["status"] == "created":
            case["created"] = t["event_time"]
        elif t["status"] == "resolved":
            case["resolved"].append(t["event_time"])
    for case in cases.values():
        acc = out[case["channel"]]
        acc[2] += 1
        acc[3] += 1
        acc[4] += max(case["resolved"]) - case["created"]
    return {k: tuple(v) for k, v in out.items()}


def stored(url: str) -> dict[str, tuple[int, ...]]:
    ch = connect(url)
    try:
        return {r.dimension_value: (r.agg.rated, r.agg.satisfied, r.agg.created, r.agg.resolved, r.agg.resolution_ms)
                for r in totals(ch, "channel", 60)}
    finally:
        ch.close()


def run(tmp_path: Path, url: str, workers: int, kills: int, clickhouse_outage: float = 0.0,
        command: Sequence[str] = SATPULSE_WORKER) -> None:
    namespace = f"w-{uuid.uuid4().hex[:8]}"
    now_ms = int(time.time() * 1000)
    feedback = list(sample_submissions(2_000, now_ms - 4 * 3600_000, 3600_000, seed=3))
    tickets = list(sample_ticket_events(300, now_ms - 4 * 3600_000, 3600_000, seed=3))
    path = tmp_path / "in.jsonl"
    write_jsonl(path, iter(feedback + tickets))
    group = f"g-{namespace}"
    env = {"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": group, "SATPULSE_CLICKHOUSE_URL": url,
           "SATPULSE_FLUSH_MAX_ROWS": "200", "SATPULSE_FLUSH_MAX_AGE_SECONDS": "0.2"}
    procs = []
    for i in range(workers):
        port = free_port()
        procs.append(WorkerProcess({**env, "SATPULSE_WORKER_WEB_PORT": str(port)}, tmp_path / f"w{i}.log", port,
                                   command))
    for p in procs:
        p.start(timeout=90)
    rng = random.Random(9)
    try:
        if clickhouse_outage:  # the ClickHouse server goes away under a running worker, input keeps coming
            local_services.ensure_down(["clickhouse"])
        try:
            subprocess.run([sys.executable, "-m", "satpulse.cli", "publish", str(path)], env=procs[0].env,
                           check=True, capture_output=True, timeout=120)
            time.sleep(clickhouse_outage)
            if clickhouse_outage:
                assert metric_sum(procs[0].scrape(), "satpulse_sink_errors_total") > 0  # it was retrying
        finally:
            if clickhouse_outage:
                local_services.ensure_up(["clickhouse"])
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 3.0))
            procs[0].stop(kill=True)
            procs[0].start(timeout=90)
        names = topics.for_namespace(namespace)
        wait_consumed(get_settings().kafka_bootstrap, group, [names.ingest], 180, procs)  # counted with its cleaning
    finally:
        for p in procs:
            p.stop()
    assert stored(url) == offline(feedback, tickets)
    ch = connect(url)
    try:  # the stored 1 h and 1 d roll-ups, kept by the workers through the kills, equal the summed minute cells
        for size in (3600, 86400):
            assert windows(ch, "channel", size) == windows(ch, "channel", 60, size) != []
    finally:
        ch.close()


def server_url() -> str:
    return f"clickhouse://default:@127.0.0.1:{get_settings().clickhouse_native_port}/w_{uuid.uuid4().hex[:8]}"


def test_clickhouse_down_for_30_s_mid_stream_loses_and_doubles_nothing(services: Any, tmp_path: Path) -> None:
    run(tmp_path, server_url(), workers=1, kills=0, clickhouse_outage=30.0)


def test_two_workers_give_the_offline_totals(services: Any, tmp_path: Path) -> None:
    run(tmp_path, server_url(), workers=2, kills=0)


@pytest.mark.parametrize("engine", ["server", "chdb"])
def test_kill_9_and_restart_neither_loses_nor_doubles(services: Any, tmp_path: Path, engine: str) -> None:
    url = server_url() if engine == "server" else f"chdb://{tmp_path / 'chdb'}"
    run(tmp_path, url, workers=1, kills=3)


def test_faust_cli_runs_the_same_worker(services: Any, tmp_path: Path) -> None:
    """``faust -A streams.app worker`` is the same app as ``satpulse worker``: exact totals, killed and
    restarted once."""
    run(tmp_path, server_url(), workers=1, kills=1, command=FAUST_WORKER)


def test_a_worker_stopped_while_its_group_waits_for_a_killed_member_stops_cleanly(services: Any, tmp_path: Path
                                                                                  ) -> None:
    """SIGTERM while the group rebalances (a killed member stays in it until its session times out): the worker
    finishes its batches in flight and exits 0, without giving them up for the 8 s stop timeout."""
    namespace = f"s-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    ensure_topics(Settings(topic_namespace=namespace), names.all())
    port = free_port()
    env = {"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"g-{namespace}",
           "SATPULSE_CLICKHOUSE_URL": server_url(), "SATPULSE_WORKER_WEB_PORT": str(port)}
    worker = WorkerProcess(env, tmp_path / "w.log", port)
    worker.start(timeout=90)
    try:
        produce(names.ingest, [keyed(s) for s in sample_submissions(50, int(time.time() * 1000) - 3600_000, 3600_000,
                                                                    seed=6)])
        wait_consumed(get_settings().kafka_bootstrap, f"g-{namespace}", [names.ingest], 120, [worker])
        worker.stop(kill=True)  # its member stays in the group until its session times out
        worker.start(timeout=90)  # joins: the rebalance waits for the killed member
        worker.stop(timeout=10)  # SIGTERM; escalates to SIGKILL after 10 s
        assert worker.proc is not None and worker.proc.returncode == 0, worker.describe()
        assert "did not finish" not in worker.log_path.read_text(), worker.describe()
    finally:
        worker.stop()


def test_until_caught_up_exits_once_everything_is_stored(services: Any, tmp_path: Path) -> None:
    """A backfill: ``satpulse worker --until-caught-up`` exits 0 with a summary once the input present at its
    start is stored, re-keyed records included, and the stored totals are exact."""
    namespace = f"b-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    ensure_topics(Settings(topic_namespace=namespace), names.all())
    now_ms = int(time.time() * 1000)
    feedback = list(sample_submissions(1_000, now_ms - 4 * 3600_000, 3600_000, seed=4))
    tickets = list(sample_ticket_events(150, now_ms - 4 * 3600_000, 3600_000, seed=4))
    messages = [keyed(submission) for submission in feedback + tickets]
    messages = [(b"wrong-key-%d" % i if i % 10 == 0 else key, value)  # every 10th keyed wrongly: re-keyed
                for i, (key, value) in enumerate(messages)]
    produce(names.ingest, [*messages, (b"x", b"{not json")])
    url = server_url()
    env = {**os.environ, "SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"g-{namespace}",
           "SATPULSE_CLICKHOUSE_URL": url, "SATPULSE_WORKER_WEB_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "satpulse.cli", "worker", "--until-caught-up"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"clean events counted: {len(feedback) + len(tickets)}" in done.stdout, done.stdout
    assert "cleaner unparseable_payload: 1" in done.stdout, done.stdout
    assert stored(url) == offline(feedback, tickets)
