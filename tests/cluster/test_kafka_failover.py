"""Broker failover on the real 3-node Kafka cluster (issue 17): a steady stream of valid events goes through a
``satpulse worker`` process while the broker leading the busiest ingest partition is killed with SIGKILL and
restarted.

What must hold: the topics have 3 replicas and min.insync.replicas 2; every event reaches Kafka exactly once
(idempotent acks=all producer: no event lost or doubled on the topic); the stored totals equal the offline
computation of tests/integration/test_workers.py exactly; the same worker process keeps running, and the killed
partition is consumed again within :data:`PAUSE_BOUND_SECONDS` (a liveness deadline, not a performance
assertion: the measured pause is printed); and the CSAT drop that the stream carries after the kill raises
SatpulseCsatLow in a real Prometheus scraping the worker (its `for:` shortened to 2 s, tests/cluster/conftest.py)
while SatpulseWorkerDown never fires. The sink is chDB in the test's tmp dir, then the replicated ClickHouse (two
replicas, insert quorum 2: the whole local cluster at once).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaError

from adapters.publisher import ensure_topics
from devtools import services as local_services
from devtools.sample import sample_ticket_events
from devtools.worker_process import WorkerProcess, metric_sum, read_records, wait_consumed
from satpulse import topics
from satpulse.settings import Settings
from sinks.clickhouse import ClickHouse, connect
from sinks.migrations import migrate
from sinks.queries import totals
from tests.cluster.clickhouse_fixtures import Replicas, SteadyPublisher, clickhouse_replicas, cluster_database
from tests.integration.test_alerting import wait_for
from tests.integration.test_workers import offline

if TYPE_CHECKING:
    from tests.cluster.conftest import Monitoring

pytestmark = pytest.mark.cluster
__all__ = ["clickhouse_replicas", "cluster_database"]  # fixtures (the replicated sink), imported to be found

WINDOW_SECONDS = 5
RATINGS = 8_000  # chat ratings on a 1-5 scale: the first half 90 % satisfied, the second half 20 %
CASES = 200  # support cases (created, first response, resolved; some reopened), event times 3-4 h ago
RATE = 300  # events per second the producer aims at (the stream lasts ~30 s)
KILL_AFTER = 0.25  # share of the stream the worker has taken in when the broker is killed
PAUSE_BOUND_SECONDS = 120.0


def _stream(tag: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(feedback, tickets, both in publishing order) in the shapes offline() knows. Each rating's event time is
    when it is due to be published at :data:`RATE` from now; the cases' are 3-4 h ago."""
    now_ms = int(time.time() * 1000)
    tickets = list(sample_ticket_events(CASES, now_ms - 4 * 3600_000, 3600_000, seed=17))
    feedback = [{"kind": "feedback", "event_id": f"{tag}-r{i}", "source": "failover-test", "channel": "Live chat",
                 "ticket_id": f"{tag}-r{i}", "rating_scale": "1-5",
                 "rating_value": 5 if i % 10 < (9 if i < RATINGS // 2 else 2) else 1} for i in range(RATINGS)]
    events = [e for pair in zip(feedback[:len(tickets)], tickets, strict=True) for e in pair]
    events += feedback[len(tickets):]
    for position, event in enumerate(events):
        if event["kind"] == "feedback":
            event["event_time"] = now_ms + position * 1000 // RATE
    return feedback, tickets, events


def _partitions(admin: KafkaAdminClient, topic: str) -> dict[int, dict[str, Any]]:
    """partition -> its description (leader_id, replica_nodes, isr_nodes, ...). Raises KafkaError."""
    (described,) = admin.describe_topics([topic])
    return {p["partition_index"]: p for p in described["partitions"]}


def _isr_sizes(admin: KafkaAdminClient, topic: str) -> set[int]:
    """The in-sync replica counts of the topic's partitions; empty while the cluster does not answer."""
    try:
        return {len(p["isr_nodes"]) for p in _partitions(admin, topic).values()}
    except KafkaError:
        return set()


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def _committed(admin: KafkaAdminClient, group: str, topic: str, partition: int) -> int:
    """The group's committed offset of the partition; -1 while none is or the group coordinator does not answer
    (it may be the killed broker until the group moved)."""
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:
        return -1
    meta = offsets.get(TopicPartition(topic, partition))
    return -1 if meta is None else int(meta.offset)


def _stored(ch: ClickHouse) -> dict[str, tuple[int, ...]]:
    """channel -> (rated, satisfied, created, resolved, resolution ms sum) as stored, in offline()'s shape; closes
    ``ch``."""
    try:
        return {r.dimension_value: (r.agg.rated, r.agg.satisfied, r.agg.created, r.agg.resolved, r.agg.resolution_ms)
                for r in totals(ch, "channel", WINDOW_SECONDS)}
    finally:
        ch.close()


def _sink(sink: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, str], Callable[[], ClickHouse]]:
    """The worker's ClickHouse settings and a way to connect to it: a chDB directory, or a database on the
    replicated ClickHouse of tests/cluster/clickhouse_fixtures.py (migrated here: its ON CLUSTER DDL takes ~10 s,
    which is not what this test is about)."""
    if sink == "chdb":
        url = f"chdb://{tmp_path / 'chdb'}"
        return {"SATPULSE_CLICKHOUSE_URL": url}, lambda: connect(url)
    replicas: Replicas = request.getfixturevalue("clickhouse_replicas")
    database: str = request.getfixturevalue("cluster_database")
    ch = replicas.connect(database)
    try:
        migrate(ch)
    finally:
        ch.close()
    return ({"SATPULSE_CLICKHOUSE_URL": replicas.url(database), "SATPULSE_CLICKHOUSE_CLUSTER": replicas.cluster},
            lambda: replicas.connect(database))


def _cleaned(worker: WorkerProcess) -> float:
    """Events the worker's clean stage took in; 0 while its /metrics does not answer."""
    try:
        return metric_sum(worker.scrape(), "satpulse_events_in_total", stage="cleaner")
    except OSError:
        return 0.0


@pytest.fixture
def admin(kafka_cluster: dict[str, str]) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_cluster["SATPULSE_KAFKA_BOOTSTRAP"])
    yield client
    client.close()


@pytest.mark.parametrize("sink", ["chdb", "replicated-clickhouse"])
def test_kill_9_leader_of_busiest_partition_mid_stream(sink: str, kafka_cluster: dict[str, str],
                                                       cluster_prometheus: Monitoring, admin: KafkaAdminClient,
                                                       request: pytest.FixtureRequest, tmp_path: Path) -> None:
    namespace = f"failover-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    group = f"g-{namespace}"
    sink_env, store = _sink(sink, request, tmp_path)
    bootstrap = kafka_cluster["SATPULSE_KAFKA_BOOTSTRAP"]
    env = {**kafka_cluster, **sink_env, "SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": group,
           "SATPULSE_WORKER_WEB_PORT": str(cluster_prometheus.worker_port),
           "SATPULSE_WINDOW_SECONDS": str(WINDOW_SECONDS), "SATPULSE_GRACE_SECONDS": "1",
           "SATPULSE_IDLE_SECONDS": "1"}
    settings = Settings(**{key.removeprefix("SATPULSE_").lower(): value for key, value in env.items()})
    ensure_topics(settings, names.all())

    # the topics as the settings ask: 3 replicas, all in sync, writes need 2 (once every broker's metadata has them)
    wait_for("the new ingest topic's partitions in the metadata", lambda: _isr_sizes(admin, names.ingest), 60)
    assert {len(p["replica_nodes"]) for p in _partitions(admin, names.ingest).values()} == {3}
    assert _isr_sizes(admin, names.ingest) == {3}
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, names.ingest,
                                                     ["min.insync.replicas"])])
    assert configs["topic"][names.ingest]["min.insync.replicas"]["value"] == "2"

    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, log, cluster_prometheus.worker_port)
    worker.start(timeout=120)
    assert worker.proc is not None
    worker_pid = worker.proc.pid
    feedback, tickets, events = _stream(namespace)
    producer = SteadyPublisher(settings, names.ingest, events, RATE)
    prometheus = cluster_prometheus.prometheus
    try:
        producer.start()
        wait_for("the worker to take in a quarter of the stream",
                 lambda: _cleaned(worker) >= KILL_AFTER * len(events), 120, log)

        # kill -9 the broker that leads the busiest ingest partition
        ends = _end_offsets(bootstrap, names.ingest)
        busiest = max(ends, key=lambda p: (ends[p], -p))
        leader = _partitions(admin, names.ingest)[busiest]["leader_id"]
        (node,) = [st for st in local_services.kafka_cluster_status() if st.name == f"kafka-{leader}"]
        assert node.pid is not None
        assert producer.is_alive(), "the stream ended before the kill: raise RATINGS"
        assert prometheus.alert_states("SatpulseCsatLow") == []  # the first half is 90 % satisfied
        killed_at = time.monotonic()
        os.kill(node.pid, signal.SIGKILL)

        def moved() -> bool:
            try:
                p = _partitions(admin, names.ingest)[busiest]
            except KafkaError:
                return False
            return p["leader_id"] not in (leader, -1) and leader not in p["isr_nodes"]

        wait_for(f"a new leader of partition {busiest} without broker {leader} in its ISR", moved, 120, log)
        wait_for(f"the worker to commit records of partition {busiest} written after the kill",
                 lambda: _committed(admin, group, names.ingest, busiest) > ends[busiest], PAUSE_BOUND_SECONDS, log)
        pause = time.monotonic() - killed_at

        local_services.kafka_cluster_up()  # restarts the killed node, waits until every node is live again
        wait_for("all 3 replicas of every ingest partition back in sync",
                 lambda: _isr_sizes(admin, names.ingest) == {3}, 120, log)
        producer.join(timeout=300)
        assert not producer.is_alive() and producer.error is None, producer.error
        wait_consumed(bootstrap, group, [names.ingest], 180)

        # the drop in the second half of the stream (written after the kill) raises the CSAT alert
        firing = wait_for("SatpulseCsatLow firing for chat", lambda: [
            labels for state, labels in prometheus.alert_states("SatpulseCsatLow")
            if state == "firing" and labels.get("channel") == "chat"], 120, log)
        assert firing[0]["window"] == f"{WINDOW_SECONDS}s"
        assert [s for s, _ in prometheus.alert_states("SatpulseWorkerDown") if s == "firing"] == []
        assert worker.proc.poll() is None and worker.proc.pid == worker_pid  # the same process throughout
        samples = worker.scrape()
        assert metric_sum(samples, "satpulse_dead_letters_total") == 0
        print(f"\nkilled broker {leader} (leader of ingest partition {busiest}); that partition was consumed "
              f"again {pause:.1f} s later", file=sys.stderr)
    finally:
        producer.join(timeout=300)
        worker.stop()

    # on the topic: every event exactly once (nothing lost, no producer retry doubled)
    written = [json.loads(r.value)["event_id"] for r in read_records(bootstrap, names.ingest)]
    assert sorted(written) == sorted(e["event_id"] for e in events)
    # stored: exactly the offline answer
    assert _stored(store()) == offline(feedback, tickets)
