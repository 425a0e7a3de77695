"""ClickHouse replica failover on the real processes (issue 17): a ``satpulse worker`` writes a steady stream into
the replicated tables of the local two-replica cluster (clickhouse_cluster set, insert quorum 2 of 2) while the
replica its connection talks to is killed with SIGKILL and restarted.

What must hold: the same worker process keeps running and waits out the outage (writes need both replicas, so
they stop while one is down; reads fail over to the other), it resumes once the replica is back (within
:data:`RESUME_BOUND_SECONDS`: a liveness deadline, not a performance assertion; the measured pause is printed);
the failed writes are counted as transient sink errors and raise SatpulseSinkFailing in a real Prometheus
scraping the worker (its `for:` shortened to 2 s, tests/cluster/conftest.py), never as a permanent error; the
stored totals equal the offline computation of tests/integration/test_workers.py exactly (nothing lost, nothing
doubled, roll-ups included); and both replicas end up holding the same rows.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from adapters.publisher import ensure_topics
from devtools import clickhouse_cluster
from devtools.sample import sample_submissions, sample_ticket_events
from devtools.worker_process import WorkerProcess, metric_sum, wait_consumed
from satpulse import topics
from satpulse.settings import Settings
from sinks.migrations import migrate
from sinks.queries import totals, windows
from tests.cluster.clickhouse_fixtures import (
    Replicas,
    SteadyPublisher,
    clickhouse_replicas,
    cluster_database,
    publish,
)
from tests.integration.test_alerting import wait_for
from tests.integration.test_workers import offline

if TYPE_CHECKING:
    from tests.cluster.conftest import Monitoring

pytestmark = pytest.mark.cluster
__all__ = ["clickhouse_replicas", "cluster_database"]  # fixtures, imported to be found

FEEDBACK = 3_000
CASES = 300  # ~1,000 lifecycle events
HEAD = 200  # events published at once before the steady stream (the worker has joined once they are stored)
RATE = 300  # events per second of the steady stream (it lasts ~13 s)
KILL_AFTER = 300  # events of the steady stream stored when the replica is killed
RESUME_BOUND_SECONDS = 120.0
# every replicated table, with the columns that identify a row's content after FINAL
CONTENT = {
    "window_cells": "dimension, dimension_value, window_seconds, window_start, source_topic, source_partition, "
                    "version, rated, satisfied, created, resolved, resolution_ms",
    "feedback_events": "rating_id, rating_version, event_id, source_partition, source_offset, satisfied",
    "ticket_events": "ticket_id, event_id, status, source_partition, source_offset",
    "dead_letters": "origin_topic, origin_partition, origin_offset, origin_ref, stage, reason",
    "schema_migrations": "version",
}


def _stored_events(worker: WorkerProcess) -> float:
    return metric_sum(worker.scrape(), "satpulse_events_out_total", stage="window")


def _flushes(worker: WorkerProcess) -> tuple[float, float]:
    """(batches stored, seconds spent storing them) by the worker's ClickHouse sink so far."""
    samples = worker.scrape()
    return (metric_sum(samples, "satpulse_sink_flush_seconds_count", sink="clickhouse"),
            metric_sum(samples, "satpulse_sink_flush_seconds_sum", sink="clickhouse"))


def _replica_content(replicas: Replicas, number: int, database: str) -> dict[str, tuple[int, int]]:
    """table -> (rows, checksum of their content) of replica ``number``'s local tables, after it caught up with
    its replication queue."""
    ch = replicas.connect_replica(number, database)
    try:
        content = {}
        for table, columns in CONTENT.items():
            ch.execute(f"SYSTEM SYNC REPLICA {database}.{table}_local")
            rows = ch.query(f"SELECT count(), sum(cityHash64({columns})) FROM {database}.{table}_local FINAL")
            content[table] = (int(rows[0][0]), int(rows[0][1]))
        return content
    finally:
        ch.close()


def test_kill_9_the_replica_the_worker_writes_to(clickhouse_replicas: Replicas, cluster_database: str,
                                                 kafka_cluster: dict[str, str], cluster_prometheus: Monitoring,
                                                 tmp_path: Path) -> None:
    replicas, database = clickhouse_replicas, cluster_database
    namespace = f"chfail-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    group = f"g-{namespace}"
    env = {**kafka_cluster, "SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": group,
           "SATPULSE_CLICKHOUSE_URL": replicas.url(database), "SATPULSE_CLICKHOUSE_CLUSTER": replicas.cluster,
           "SATPULSE_WORKER_WEB_PORT": str(cluster_prometheus.worker_port),
           "SATPULSE_FLUSH_MAX_ROWS": "200", "SATPULSE_FLUSH_MAX_AGE_SECONDS": "0.2"}
    settings = Settings(**{key.removeprefix("SATPULSE_").lower(): value for key, value in env.items()})
    ensure_topics(settings, names.all())
    ch = replicas.connect(database)
    try:  # what the worker does at start-up (then finds nothing to do): ~13 s of ON CLUSTER DDL, not mid-stream
        migrate(ch)
    finally:
        ch.close()
    now_ms = int(time.time() * 1000)
    feedback = list(sample_submissions(FEEDBACK, now_ms - 4 * 3600_000, 3600_000, seed=17))
    tickets = list(sample_ticket_events(CASES, now_ms - 4 * 3600_000, 3600_000, seed=17))
    events = [e for pair in zip(feedback, tickets, strict=False) for e in pair] + feedback[len(tickets):]

    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, log, cluster_prometheus.worker_port)
    worker.start(timeout=120)
    assert worker.proc is not None
    worker_pid = worker.proc.pid
    publisher = SteadyPublisher(settings, names.ingest, events[HEAD:], RATE)
    prometheus = cluster_prometheus.prometheus
    victim = replicas.pid(1)  # first in the URL: the replica the worker's connection talks to
    try:
        publish(settings, names.ingest, events[:HEAD])
        wait_for("the worker to store the first events", lambda: _stored_events(worker) >= HEAD, 180, log)
        head_flushes = _flushes(worker)
        publisher.start()
        wait_for("the worker to store events of the steady stream",
                 lambda: _stored_events(worker) >= HEAD + KILL_AFTER, 180, log)
        assert publisher.is_alive(), "the stream ended before the kill: raise FEEDBACK"
        # ClickHouse time per batch of the steady stream before the kill (printed, not asserted)
        flushes, flush_seconds = (b - a for a, b in zip(head_flushes, _flushes(worker), strict=True))
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        # writes fail while replica 1 is down (quorum 2 of 2): transient errors, SatpulseSinkFailing fires
        firing = wait_for("SatpulseSinkFailing firing for the worker", lambda: [
            labels for state, labels in prometheus.alert_states("SatpulseSinkFailing")
            if state == "firing" and labels.get("sink") == "clickhouse"], 120, log)
        assert firing[0]["instance"].endswith(f":{cluster_prometheus.worker_port}")
        stalled = _stored_events(worker)
        restarted_at = time.monotonic()
        clickhouse_cluster.up(replicas.settings)  # restarts the killed replica, waits until it answers
        wait_for("the worker to store events again", lambda: _stored_events(worker) > stalled,
                 RESUME_BOUND_SECONDS, log)
        resumed_at = time.monotonic()

        publisher.join(timeout=300)
        assert not publisher.is_alive() and publisher.error is None, publisher.error
        wait_consumed(settings.kafka_bootstrap, group, [names.ingest], 180)
        samples = worker.scrape()
        assert worker.proc.poll() is None and worker.proc.pid == worker_pid  # the same process throughout
        assert metric_sum(samples, "satpulse_sink_errors_total", sink="clickhouse", kind="transient") > 0
        assert metric_sum(samples, "satpulse_sink_errors_total", kind="permanent") == 0
        assert metric_sum(samples, "satpulse_sink_blocked_permanent") == 0
        assert metric_sum(samples, "satpulse_dead_letters_total") == 0
        print(f"\nreplica 1 killed: writes stopped for {resumed_at - killed_at:.1f} s (replica down "
              f"{restarted_at - killed_at:.1f} s, worker storing again {resumed_at - restarted_at:.1f} s after "
              f"it was restarted); before it, {flushes:.0f} batches of the steady stream were stored in "
              f"{1000 * flush_seconds / max(flushes, 1):.0f} ms each on average", file=sys.stderr)
    finally:
        publisher.join(timeout=300)
        worker.stop()
        clickhouse_cluster.up(replicas.settings)  # a failed test never leaves a replica down

    ch = replicas.connect(database)
    try:
        stored = {r.dimension_value: (r.agg.rated, r.agg.satisfied, r.agg.created, r.agg.resolved,
                                      r.agg.resolution_ms) for r in totals(ch, "channel", 60)}
        assert stored == offline(feedback, tickets)
        for size in (3600, 86400):  # the stored roll-ups equal the summed minute cells
            assert windows(ch, "channel", size) == windows(ch, "channel", 60, size) != []
    finally:
        ch.close()
    assert _replica_content(replicas, 1, database) == _replica_content(replicas, 2, database)
