"""Fixtures and helpers of the ClickHouse cluster tests (issue 17): ZooKeeper and two ClickHouse 18.16 replicas of
one shard (:mod:`devtools.clickhouse_cluster`), a fresh database per test, and a steady publisher.

The cluster runs on the ports of the settings (replicas 19100/19200, ZooKeeper 19181): one already running under
``<work_dir>/cluster/`` is used as it is and left running; otherwise the fixture starts one under a temporary work
dir and stops it after the test module. Nothing here touches the single-node services of tests/conftest.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.emit import key_of
from adapters.publisher import Publisher
from devtools import clickhouse_cluster
from devtools.services import ServiceError
from satpulse.settings import Settings, get_settings
from sinks.clickhouse import ClickHouse, connect


@dataclass(frozen=True)
class Replicas:
    """The running cluster: its settings (ports, work dir) and the cluster name its servers define."""

    settings: Settings
    cluster: str

    def url(self, database: str) -> str:
        """``clickhouse_url`` naming both replicas, replica 1 first."""
        return clickhouse_cluster.replica_url(self.settings, database)

    def connect(self, database: str) -> ClickHouse:
        """A client of the cluster (replicated tables, quorum inserts) that fails over between the replicas."""
        return connect(self.url(database), self.cluster, self.settings.clickhouse_insert_quorum)

    def connect_replica(self, number: int, database: str) -> ClickHouse:
        """A plain client of replica ``number`` (1-based) alone, for reading its local tables."""
        port = self.settings.clickhouse_cluster_ports[number - 1]
        return connect(f"clickhouse://default:@127.0.0.1:{port}/{database}")

    def pid(self, number: int) -> int:
        """The pid of replica ``number``; fails the test if it is not running."""
        (replica,) = [st for st in clickhouse_cluster.status(self.settings) if st.name == f"clickhouse-{number}"]
        assert replica.pid is not None, f"{replica.name} is not running"
        return replica.pid


@pytest.fixture(scope="module")
def clickhouse_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """ZooKeeper and both replicas, running and answering. A cluster already running under the work dir of the
    settings is used as it is and left running; otherwise one is started under a temporary work dir (on the same
    ports) and stopped after the module, its data deleted with the directory. Module scope: each test module
    imports the fixture, which makes one fixture per module (starting the cluster takes about 2 s)."""
    settings = get_settings()
    if all(st.state == "running" for st in clickhouse_cluster.status(settings)):
        yield Replicas(settings, clickhouse_cluster.cluster_name(settings))
        return
    settings = settings.model_copy(update={"work_dir": tmp_path_factory.mktemp("clickhouse-cluster")})
    try:
        clickhouse_cluster.up(settings)
    except ServiceError as exc:
        clickhouse_cluster.down(settings)
        pytest.fail(str(exc), pytrace=False)
    try:
        yield Replicas(settings, clickhouse_cluster.cluster_name(settings))
    finally:
        clickhouse_cluster.down(settings)


@pytest.fixture
def cluster_database(clickhouse_replicas: Replicas) -> str:
    """The name of a database of its own, created by the first connection. Not dropped: on 18.16, DROP DATABASE
    fails once a Distributed table was renamed (its data directory keeps the old name; docs/scaling.md), and the
    fixture's own cluster is deleted as a whole."""
    return f"t_{uuid.uuid4().hex[:10]}"


def publish(settings: Settings, topic: str, events: Sequence[dict[str, Any]], rate: float | None = None) -> None:
    """Publish ``events`` to ``topic`` in order (acks=all, idempotent: adapters.publisher), keyed as ``satpulse
    publish`` keys them, at about ``rate`` per second (None: as fast as the producer goes). Blocks until every
    one is acknowledged; raises what the publisher raises."""
    with Publisher(settings) as publisher:
        started = time.monotonic()
        for sent, event in enumerate(events, 1):
            publisher.send(topic, key_of(event), json.dumps(event).encode())
            ahead = sent / rate - (time.monotonic() - started) if rate else 0.0
            if ahead > 0:
                time.sleep(ahead)


class SteadyPublisher(threading.Thread):
    """:func:`publish` in a thread; ``error`` keeps its failure for the test to raise."""

    def __init__(self, settings: Settings, topic: str, events: Sequence[dict[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.topic, self.events, self.rate = settings, topic, events, rate
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            publish(self.settings, self.topic, self.events, self.rate)
        except BaseException as exc:
            self.error = exc
