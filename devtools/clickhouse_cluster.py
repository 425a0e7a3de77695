"""A local replicated ClickHouse without Docker: ZooKeeper and one ClickHouse 18.16 server per replica.

Every replica of ``clickhouse_cluster_ports`` belongs to one shard of the cluster named ``clickhouse_cluster``
(``satpulse`` when unset), with macros ``{shard}`` = 01 and ``{replica}`` = replica-N, a ``zookeeper`` section
pointing at the ZooKeeper on ``zookeeper_port`` and ``distributed_ddl`` for ``ON CLUSTER`` statements: what
:mod:`sinks.migrations` needs to create Replicated* and Distributed tables. Replica N listens on the N-th native
and http port and on native port + 9 for replication. Each process runs detached with the start/stop/pid-file
machinery of :mod:`devtools.services`, under ``<work_dir>/cluster/zookeeper`` and
``<work_dir>/cluster/clickhouse-N``; only processes recorded in those pid files are ever stopped.
"""

from __future__ import annotations

import socket
from pathlib import Path

from devtools.services import (
    CONFIG_DIR,
    MissingPrerequisiteError,
    ServiceError,
    ServiceStatus,
    _clickhouse_check,
    _clickhouse_probe,
    _clickhouse_server,
    _cluster_settings,
    _java,
    _locked,
    _render,
    _Spec,
    _start,
    _status,
    _stop,
)
from satpulse.settings import Settings

TEMPLATES = CONFIG_DIR / "clickhouse-cluster"
DEFAULT_CLUSTER = "satpulse"
SHARD = "01"
INTERSERVER_PORT_OFFSET = 9  # replica N replicates over its native port + 9 (19100 -> 19109)
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")  # Debian's zookeeper package (its manifest names the rest)


def cluster_name(settings: Settings) -> str:
    """The cluster the local servers define in ``remote_servers``: ``clickhouse_cluster`` or ``satpulse``."""
    return settings.clickhouse_cluster or DEFAULT_CLUSTER


def replica_url(settings: Settings, database: str = "satpulse") -> str:
    """A ``clickhouse_url`` naming every local replica, first port first (the client fails over in order)."""
    hosts = ",".join(f"127.0.0.1:{port}" for port in settings.clickhouse_cluster_ports)
    return f"clickhouse://default:@{hosts}/{database}"


def _replica_settings(settings: Settings) -> Settings:
    """``settings`` with the work dir of the cluster (``_Spec`` keeps each service in ``work_dir/name``). Raises
    ServiceError unless every replica has an http port."""
    if len(settings.clickhouse_cluster_http_ports) != len(settings.clickhouse_cluster_ports):
        raise ServiceError("clickhouse_cluster_http_ports needs one port per port in clickhouse_cluster_ports")
    return _cluster_settings(settings)


# ----------------------------------------------------------------------------------------------- zookeeper


def _zookeeper_check() -> None:
    _java()
    if not ZOOKEEPER_JAR.is_file():
        raise MissingPrerequisiteError(f"{ZOOKEEPER_JAR} not found: apt-get install -y zookeeper")


def _zookeeper_prepare(settings: Settings, home: Path) -> list[str]:
    (home / "data").mkdir(parents=True, exist_ok=True)
    config = home / "zoo.cfg"
    _render(TEMPLATES / "zoo.cfg", config, {"home": home, "zookeeper_port": settings.zookeeper_port})
    return [_java(), "-Xms64m", "-Xmx256m", "-Djava.awt.headless=true", "-cp", str(ZOOKEEPER_JAR),
            "org.apache.zookeeper.server.ZooKeeperServerMain", str(config)]


def _zookeeper_probe(settings: Settings) -> bool:
    """True once ZooKeeper serves requests: ``srvr`` reports its version (``ruok`` says imok before that, and
    ClickHouse 18.16 started against a ZooKeeper that refuses its session crashes at its first ON CLUSTER)."""
    try:
        with socket.create_connection(("127.0.0.1", settings.zookeeper_port), timeout=2) as sock:
            sock.sendall(b"srvr")
            return sock.recv(64).startswith(b"Zookeeper version:")
    except OSError:
        return False


ZOOKEEPER = _Spec(
    name="zookeeper",
    ready_timeout=60.0,
    port=lambda s: s.zookeeper_port,
    check=_zookeeper_check,
    prepare=_zookeeper_prepare,
    probe=_zookeeper_probe,
)

# ----------------------------------------------------------------------------------------------- replicas


def _replica_spec(index: int) -> _Spec:
    """The spec of replica ``index`` (0-based; its directory and macro are clickhouse-N / replica-N, N = index + 1)."""

    def native_port(settings: Settings) -> int:
        return settings.clickhouse_cluster_ports[index]

    def prepare(settings: Settings, home: Path) -> list[str]:
        replicas = "\n".join(f"                <replica><host>127.0.0.1</host><port>{port}</port></replica>"
                              for port in settings.clickhouse_cluster_ports)
        return _clickhouse_server(home, TEMPLATES / "config.xml", {
            "home": home, "native_port": native_port(settings),
            "http_port": settings.clickhouse_cluster_http_ports[index],
            "interserver_port": native_port(settings) + INTERSERVER_PORT_OFFSET,
            "cluster": cluster_name(settings), "replicas": replicas, "zookeeper_port": settings.zookeeper_port,
            "shard": SHARD, "replica": f"replica-{index + 1}"})

    return _Spec(
        name=f"clickhouse-{index + 1}",
        ready_timeout=60.0,
        port=native_port,
        check=_clickhouse_check,
        prepare=prepare,
        probe=lambda s: _clickhouse_probe(s.model_copy(update={"clickhouse_native_port": native_port(s)})),
    )


def _specs(settings: Settings) -> list[_Spec]:
    """ZooKeeper first, then every replica (the order of start-up)."""
    return [ZOOKEEPER, *(_replica_spec(i) for i in range(len(settings.clickhouse_cluster_ports)))]


# ----------------------------------------------------------------------------------------------- public API


def up(settings: Settings) -> None:
    """Start ZooKeeper, then every replica, unless already running; return once each one answers.

    Blocks for the start-up (up to 60 s per process). Raises ServiceError (MissingPrerequisiteError when a
    program is missing) if a process cannot start, exits or is not ready in time; that process is stopped
    again, the ones started before it keep running (``down`` stops them).
    """
    settings = _replica_settings(settings)
    specs = _specs(settings)
    for spec in specs:
        spec.check()
    with _locked(settings):
        for spec in specs:
            _start(spec, settings)


def down(settings: Settings) -> None:
    """Stop every replica, then ZooKeeper, that has a live pid file: SIGTERM, SIGKILL after 20 s.

    Blocks until they have exited. Never raises for a process that is not running.
    """
    settings = _replica_settings(settings)
    with _locked(settings):
        _stop(_specs(settings), settings)


def status(settings: Settings) -> list[ServiceStatus]:
    """ZooKeeper and each replica as running (live pid file) or stopped; drops stale pid files. No blocking."""
    settings = _replica_settings(settings)
    return _status(_specs(settings), settings)
