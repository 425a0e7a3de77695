"""Local Kafka, ClickHouse, Prometheus and Alertmanager without Docker: ``satpulse services up|down|status``.

Each service runs as a detached process started from the binaries installed on the machine (Kafka from the
jars that ``services/kafka/pom.xml`` fetches). Its rendered config, pid file, log and recorded start-up time
live in ``<work_dir>/<name>/``. Only processes recorded in those pid files are ever stopped. Operations on the
same work dir are serialised by a file lock, so concurrent test sessions do not race.

``satpulse services up|down|status --cluster`` does the same for a local cluster (issue 17): a Kafka KRaft cluster
of one combined broker+controller per port of ``kafka_cluster_ports`` (from the same jars; nodes in
``<work_dir>/cluster/kafka-N/``) and the replicated ClickHouse of :mod:`devtools.clickhouse_cluster`.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from string import Template

from satpulse.settings import REPO_ROOT, Settings, get_settings

CONFIG_DIR = REPO_ROOT / "config"
KAFKA_DIR = REPO_ROOT / "services" / "kafka"
KAFKA_LIB = KAFKA_DIR / "target" / "lib"
ALL_SERVICES: tuple[str, ...] = ("kafka", "clickhouse", "prometheus", "alertmanager")
CORE_SERVICES: tuple[str, ...] = ("kafka", "clickhouse")
MONITORING_SERVICES: tuple[str, ...] = ("prometheus", "alertmanager")
STOP_TIMEOUT_SECONDS = 20.0
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class ServiceError(RuntimeError):
    """A service could not be prepared, started or stopped; the message is meant for the user."""


class MissingPrerequisiteError(ServiceError):
    """A program a service needs is not installed; the message says how to install it."""


@dataclass(frozen=True)
class ServiceStatus:
    """One service as ``status`` sees it; ``startup_seconds`` is how long its current run took to start."""

    name: str
    state: str  # "running" or "stopped"
    pid: int | None
    address: str
    startup_seconds: float | None

    def line(self) -> str:
        pid = str(self.pid) if self.pid is not None else "-"
        took = f"{self.startup_seconds:.1f}s" if self.startup_seconds is not None else "-"
        return f"{self.name:<13}{self.state:<9}pid={pid:<8}{self.address:<24}startup={took}"


@dataclass(frozen=True)
class _Spec:
    """How to prepare, launch and probe one service."""

    name: str
    ready_timeout: float
    port: Callable[[Settings], int]
    check: Callable[[], None]  # raises MissingPrerequisiteError
    prepare: Callable[[Settings, Path], list[str]]  # renders config, formats storage; returns argv
    probe: Callable[[Settings], bool]  # True once the service answers
    http: bool = False  # its address is an http:// URL

    def address(self, settings: Settings) -> str:
        """Where it listens, as status shows it (loopback only)."""
        return f"{'http://' if self.http else ''}127.0.0.1:{self.port(settings)}"

    def dir(self, settings: Settings) -> Path:
        return settings.work_dir / self.name

    def pid_file(self, settings: Settings) -> Path:
        return self.dir(settings) / f"{self.name}.pid"

    def log_file(self, settings: Settings) -> Path:
        return self.dir(settings) / f"{self.name}.log"

    def startup_file(self, settings: Settings) -> Path:
        return self.dir(settings) / "startup.json"


# ----------------------------------------------------------------------------------------------- helpers


def _settings() -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"work_dir": settings.work_dir.resolve()})


def _which(program: str, hint: str) -> str:
    path = shutil.which(program) or shutil.which(program, path=os.pathsep.join(_SBIN_DIRS))
    if path is None:
        raise MissingPrerequisiteError(f"{program} not found: {hint}")
    return path


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return _which("java", "apt-get install -y openjdk-17-jre-headless")


def _render(template: Path, target: Path, values: dict[str, object]) -> None:
    try:
        text = Template(template.read_text()).substitute({k: str(v) for k, v in values.items()})
    except (KeyError, ValueError) as exc:
        raise ServiceError(f"cannot render {template}: bad placeholder {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _values(settings: Settings) -> dict[str, object]:
    return {
        "work_dir": settings.work_dir,
        "kafka_port": settings.kafka_port,
        "kafka_controller_port": settings.kafka_controller_port,
        "clickhouse_native_port": settings.clickhouse_native_port,
        "clickhouse_http_port": settings.clickhouse_http_port,
        "prometheus_port": settings.prometheus_port,
        "alertmanager_port": settings.alertmanager_port,
        "worker_web_port": settings.worker_web_port,
        "alert_webhook_url": settings.alert_webhook_url,
        "rules_dir": CONFIG_DIR / "prometheus" / "rules",
    }


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence client libraries that log every refused connection while a server is still starting."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------------------------- kafka


def _kafka_check() -> None:
    _java()
    if not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
        _which("mvn", "apt-get install -y maven")


def _kafka_fetch_jars() -> None:
    mvn = _which("mvn", "apt-get install -y maven")
    print(f"fetching Kafka jars with Maven into {KAFKA_LIB} (once) ...", file=sys.stderr, flush=True)
    cmd = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=target/lib"]
    done = subprocess.run(cmd, cwd=KAFKA_DIR, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"mvn could not fetch the Kafka jars:\n{(done.stdout + done.stderr)[-3000:]}")


def _kafka_java_args() -> list[str]:
    return [
        f"-Dlog4j.configuration=file:{CONFIG_DIR / 'kafka' / 'log4j.properties'}",
        f"-Dlog4j2.configurationFile={CONFIG_DIR / 'kafka' / 'log4j2.properties'}",
        "-Djava.awt.headless=true",
        "-cp",
        f"{KAFKA_LIB}/*",
    ]


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _kafka_format(home: Path, properties: Path, cluster_id: str, *flags: str) -> None:
    """Format the node's storage once (KRaft needs it before the first start); a formatted node is left alone."""
    if (home / "data" / "meta.properties").exists():
        return
    cmd = [_java(), *_kafka_java_args(), "kafka.tools.StorageTool", "format", "-t", cluster_id]
    done = subprocess.run([*cmd, "-c", str(properties), *flags], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServiceError(f"kafka storage format failed:\n{(done.stdout + done.stderr)[-3000:]}")


def _kafka_argv(properties: Path, heap_mb: int) -> list[str]:
    return [_java(), "-Xms256m", f"-Xmx{heap_mb}m", *_kafka_java_args(), "kafka.Kafka", str(properties)]


def _kafka_prepare(settings: Settings, home: Path) -> list[str]:
    properties = home / "server.properties"
    _render(CONFIG_DIR / "kafka" / "server.properties", properties, _values(settings))
    _kafka_format(home, properties, _new_cluster_id(), "--standalone")
    return _kafka_argv(properties, 1024)


def _kafka_answers(port: int, brokers: int = 1) -> bool:
    """True once the broker on ``port`` answers a metadata request listing at least ``brokers`` live brokers."""
    if not _port_open(port):
        return False
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError, KafkaError

    try:
        with _quiet("kafka"):
            admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000,
                                     bootstrap_timeout_ms=3000)
            try:
                return len(admin.describe_cluster()["brokers"]) >= brokers  # a MetadataRequest
            finally:
                admin.close()
    except KafkaConfigurationError:
        raise
    except (KafkaError, OSError):
        return False


def _kafka_probe(settings: Settings) -> bool:
    return _kafka_answers(settings.kafka_port)


# ----------------------------------------------------------------------------------------------- kafka cluster
# The functions below get the cluster's settings (:func:`_cluster_settings`): their work_dir is <work_dir>/cluster.


def _cluster_settings(settings: Settings) -> Settings:
    """``settings`` with the local cluster's work dir, ``<work_dir>/cluster`` (absolute)."""
    return settings.model_copy(update={"work_dir": settings.work_dir.resolve() / "cluster"})


def _cluster_replicas(settings: Settings) -> tuple[int, int]:
    """(replication factor, min insync replicas) of the cluster's topics: up to 3 copies, writes need all but one."""
    replicas = min(3, len(settings.kafka_cluster_ports))
    return replicas, max(1, replicas - 1)


def _cluster_id(settings: Settings, voters: str) -> str:
    """The id every node is formatted with: made once and kept with the quorum it was made for in
    <work_dir>/cluster/kafka-cluster.json. Raises ServiceError if ``kafka_cluster_ports`` changed since: the nodes'
    stored metadata names the old quorum and brokers (remove the directory to start a new cluster)."""
    path = settings.work_dir / "kafka-cluster.json"
    if not path.exists():
        path.write_text(json.dumps({"cluster_id": _new_cluster_id(), "voters": voters}))
    recorded = json.loads(path.read_text())
    if recorded["voters"] != voters:
        raise ServiceError(f"the Kafka cluster in {settings.work_dir} was made for the quorum {recorded['voters']}, "
                           f"not {voters} (kafka_cluster_ports changed): stop it (services down --cluster) and "
                           f"remove its kafka-* directories and {path.name}, or use another work_dir")
    return str(recorded["cluster_id"])


def _kafka_node_prepare(settings: Settings, home: Path, index: int) -> list[str]:
    ports = settings.kafka_cluster_ports
    replicas, min_insync = _cluster_replicas(settings)
    voters = ",".join(f"{i + 1}@127.0.0.1:{port + 1}" for i, port in enumerate(ports))
    cluster_id = _cluster_id(settings, voters)
    properties = home / "server.properties"
    _render(CONFIG_DIR / "kafka" / "cluster.properties", properties, {
        **_values(settings), "node_id": index + 1, "home": home, "kafka_port": ports[index],
        "kafka_controller_port": ports[index] + 1, "replication_factor": replicas, "min_insync_replicas": min_insync,
        "voters": voters,
    })
    _kafka_format(home, properties, cluster_id)
    return _kafka_argv(properties, settings.kafka_cluster_heap_mb)


def _kafka_node(index: int) -> _Spec:
    """Node ``index + 1`` of the cluster: ready once its metadata lists every node as a live broker."""
    return _Spec(
        name=f"kafka-{index + 1}",
        ready_timeout=120.0,
        port=lambda s: s.kafka_cluster_ports[index],
        check=_kafka_check,
        prepare=lambda s, home: _kafka_node_prepare(s, home, index),
        probe=lambda s: _kafka_answers(s.kafka_cluster_ports[index], brokers=len(s.kafka_cluster_ports)),
    )


# ----------------------------------------------------------------------------------------------- clickhouse


def _clickhouse_check() -> None:
    _which("clickhouse-server", "apt-get install -y clickhouse-server")


def _clickhouse_server(home: Path, config_template: Path, values: dict[str, object]) -> list[str]:
    """Prepare a ClickHouse server's directory under ``home`` (config rendered from ``config_template`` with
    ``values``, the shared users.xml); returns its argv."""
    server = _which("clickhouse-server", "apt-get install -y clickhouse-server")
    for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    _render(config_template, home / "config.xml", values)
    _render(CONFIG_DIR / "clickhouse" / "users.xml", home / "users.xml", values)
    return [server, f"--config-file={home / 'config.xml'}"]


def _clickhouse_prepare(settings: Settings, home: Path) -> list[str]:
    return _clickhouse_server(home, CONFIG_DIR / "clickhouse" / "config.xml", _values(settings))


def _clickhouse_probe(settings: Settings) -> bool:
    if not _port_open(settings.clickhouse_native_port):
        return False
    from clickhouse_driver import Client
    from clickhouse_driver.errors import Error as ClickHouseError

    client = Client(
        "127.0.0.1", port=settings.clickhouse_native_port, connect_timeout=2, send_receive_timeout=5
    )
    try:
        with _quiet("clickhouse_driver"):
            return bool(client.execute("SELECT 1") == [(1,)])
    except (ClickHouseError, OSError, EOFError):
        return False
    finally:
        client.disconnect()


# ----------------------------------------------------------------------------------------------- monitoring


def _prometheus_check() -> None:
    _which("prometheus", "apt-get install -y prometheus")


def _prometheus_prepare(settings: Settings, home: Path) -> list[str]:
    binary = _which("prometheus", "apt-get install -y prometheus")
    config = home / "prometheus.yml"
    _render(CONFIG_DIR / "prometheus" / "prometheus.local.yml", config, _values(settings))
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={home / 'data'}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
        "--web.enable-lifecycle",
    ]


def _alertmanager_check() -> None:
    _which("prometheus-alertmanager", "apt-get install -y prometheus-alertmanager")


def _alertmanager_prepare(settings: Settings, home: Path) -> list[str]:
    binary = _which("prometheus-alertmanager", "apt-get install -y prometheus-alertmanager")
    config = home / "alertmanager.yml"
    _render(CONFIG_DIR / "alertmanager" / "alertmanager.local.yml", config, _values(settings))
    return [
        binary,
        f"--config.file={config}",
        f"--storage.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}",
        "--cluster.listen-address=",
    ]


SPECS: dict[str, _Spec] = {
    "kafka": _Spec(
        name="kafka",
        ready_timeout=90.0,
        port=lambda s: s.kafka_port,
        check=_kafka_check,
        prepare=_kafka_prepare,
        probe=_kafka_probe,
    ),
    "clickhouse": _Spec(
        name="clickhouse",
        ready_timeout=60.0,
        port=lambda s: s.clickhouse_native_port,
        check=_clickhouse_check,
        prepare=_clickhouse_prepare,
        probe=_clickhouse_probe,
    ),
    "prometheus": _Spec(
        name="prometheus",
        ready_timeout=60.0,
        http=True,
        port=lambda s: s.prometheus_port,
        check=_prometheus_check,
        prepare=_prometheus_prepare,
        probe=lambda s: _http_ready(s.prometheus_port),
    ),
    "alertmanager": _Spec(
        name="alertmanager",
        ready_timeout=60.0,
        http=True,
        port=lambda s: s.alertmanager_port,
        check=_alertmanager_check,
        prepare=_alertmanager_prepare,
        probe=lambda s: _http_ready(s.alertmanager_port),
    ),
}

# children started by this process, kept so they are reaped (not left as zombies) when stopped
_children: dict[int, subprocess.Popen[bytes]] = {}


# ----------------------------------------------------------------------------------------------- processes


def _alive(pid: int, spec: _Spec, settings: Settings) -> bool:
    """True if ``pid`` is a live (not zombie) process that is this service.

    A child of this process is judged by ``poll``. Any other pid must have a command line naming the
    service's work dir (guards against pid reuse); an empty command line counts as alive, since /proc shows
    one for a moment while a process is in ``exec``.
    """
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        _children.pop(pid, None)
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return not cmdline or str(spec.dir(settings)) in cmdline


def _read_pid(spec: _Spec, settings: Settings) -> int | None:
    """The recorded pid if that process is still this service; a stale pid file is removed."""
    path = spec.pid_file(settings)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if _alive(pid, spec, settings):
        return pid
    path.unlink(missing_ok=True)
    return None


def _startup_seconds(spec: _Spec, settings: Settings) -> float | None:
    try:
        return float(json.loads(spec.startup_file(settings).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _wait_ready(spec: _Spec, settings: Settings, pid: int, started: float) -> None:
    deadline = started + spec.ready_timeout
    while not spec.probe(settings):
        if not _alive(pid, spec, settings):
            spec.pid_file(settings).unlink(missing_ok=True)
            log = spec.log_file(settings)
            raise ServiceError(f"{spec.name} exited during start-up; tail of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            _stop_pid(pid, spec, settings)
            spec.pid_file(settings).unlink(missing_ok=True)
            log = spec.log_file(settings)
            raise ServiceError(
                f"{spec.name} not ready after {spec.ready_timeout:.0f}s (stopped it); "
                f"tail of {log}:\n{_tail(log)}"
            )
        time.sleep(0.2)


@dataclass(frozen=True)
class _Launch:
    pid: int
    started: float  # time.monotonic() when launched (or found running)
    fresh: bool  # launched by this call: its start-up time is recorded once it answers


def _launch(spec: _Spec, settings: Settings) -> _Launch:
    """Start the service's process unless its pid file names a live one; does not wait for it to answer.
    Raises ServiceError if its port is taken by a process these functions did not start."""
    home = spec.dir(settings)
    home.mkdir(parents=True, exist_ok=True)
    pid = _read_pid(spec, settings)
    if pid is not None:
        return _Launch(pid, time.monotonic(), fresh=False)
    if _port_open(spec.port(settings)):
        raise ServiceError(
            f"{spec.name}: port {spec.port(settings)} is already in use by a process not started by "
            f"satpulse services (no pid file in {home})"
        )
    started = time.monotonic()
    argv = spec.prepare(settings, home)
    with spec.log_file(settings).open("ab") as log:
        log.write(f"\n=== satpulse services: starting {spec.name} at {time.ctime()} ===\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[process.pid] = process
    spec.pid_file(settings).write_text(f"{process.pid}\n")
    return _Launch(process.pid, started, fresh=True)


def _await_ready(spec: _Spec, settings: Settings, launch: _Launch) -> None:
    """Block until the launched service answers (see :func:`_wait_ready`); record a fresh start's duration."""
    _wait_ready(spec, settings, launch.pid, launch.started)
    if launch.fresh:
        seconds = round(time.monotonic() - launch.started, 2)
        spec.startup_file(settings).write_text(json.dumps({"seconds": seconds, "started_at": time.time()}))


def _start(spec: _Spec, settings: Settings) -> None:
    _await_ready(spec, settings, _launch(spec, settings))


def _stop_pid(pid: int, spec: _Spec, settings: Settings) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _alive(pid, spec, settings):
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    child = _children.pop(pid, None)
    if child is not None:
        child.wait()


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with (settings.work_dir / "services.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stop(specs: Sequence[_Spec], settings: Settings, together: bool = False) -> None:
    """Stop the services of ``specs`` that have a live pid file, last first (see :func:`ensure_down`); with
    ``together`` every one gets its SIGTERM at once (the nodes of a KRaft quorum: one stopped after the others
    have no quorum left for its controlled shutdown and would wait for the SIGKILL)."""
    running = [(spec, pid) for spec in reversed(specs) if (pid := _read_pid(spec, settings)) is not None]
    if together:
        for _, pid in running:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    for spec, pid in running:
        _stop_pid(pid, spec, settings)
        spec.pid_file(settings).unlink(missing_ok=True)


def _status(specs: Sequence[_Spec], settings: Settings) -> list[ServiceStatus]:
    result = []
    for spec in specs:
        pid = _read_pid(spec, settings)
        result.append(ServiceStatus(
            name=spec.name,
            state="running" if pid is not None else "stopped",
            pid=pid,
            address=spec.address(settings),
            startup_seconds=_startup_seconds(spec, settings) if pid is not None else None,
        ))
    return result


def _ensure_kafka_jars() -> None:
    if not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
        _kafka_fetch_jars()


def _specs(names: Sequence[str]) -> list[_Spec]:
    unknown = [name for name in names if name not in SPECS]
    if unknown:
        raise ValueError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(ALL_SERVICES)}")
    return [SPECS[name] for name in ALL_SERVICES if name in names]


# ----------------------------------------------------------------------------------------------- public API


def ensure_up(names: Sequence[str]) -> None:
    """Start the named services unless they already run; return once every one of them answers.

    Blocks for the start-up (Kafka up to 90 s, others up to 60 s; the first Kafka start may also run Maven).
    Raises ValueError for an unknown name, MissingPrerequisiteError before starting anything if a program is
    missing, ServiceError if a service exits or is not ready in time (that service is stopped again).
    """
    specs = _specs(names)
    for spec in specs:
        spec.check()
    settings = _settings()
    with _locked(settings):
        if "kafka" in names:
            _ensure_kafka_jars()
        for spec in specs:
            _start(spec, settings)


def ensure_down(names: Sequence[str]) -> None:
    """Stop the named services that have a live pid file: SIGTERM, then SIGKILL after 20 s.

    Blocks until they have exited. Processes not recorded in a pid file are never touched. Raises ValueError
    for an unknown name.
    """
    settings = _settings()
    with _locked(settings):
        _stop(_specs(names), settings)


def status(names: Sequence[str] = ALL_SERVICES) -> dict[str, ServiceStatus]:
    """Report each named service as running (live pid file) or stopped; drops stale pid files."""
    return {st.name: st for st in _status(_specs(names), _settings())}


def kafka_cluster_env(settings: Settings | None = None) -> dict[str, str]:
    """The ``SATPULSE_*`` variables that point satpulse at the local Kafka cluster: bootstrap = every node, topics
    with replication factor min(3, nodes) and min.insync.replicas one less (at least 1)."""
    settings = settings or get_settings()
    replicas, min_insync = _cluster_replicas(settings)
    return {
        "SATPULSE_KAFKA_BOOTSTRAP": ",".join(f"127.0.0.1:{port}" for port in settings.kafka_cluster_ports),
        "SATPULSE_TOPIC_REPLICATION_FACTOR": str(replicas),
        "SATPULSE_TOPIC_MIN_INSYNC_REPLICAS": str(min_insync),
    }


def kafka_cluster_up() -> None:
    """Start every node of the local Kafka cluster that is not running — all of them before waiting, since a
    node answers only once a quorum of controllers runs — then block until each one's metadata lists every node
    as a live broker (up to 120 s each; the first start may also run Maven). Also restarts a node that was
    killed. Raises MissingPrerequisiteError before starting anything if Java (or Maven) is missing, ServiceError
    if a node exits or is not ready in time (the nodes this call started are then stopped again)."""
    _kafka_check()
    settings = _cluster_settings(_settings())
    specs = [_kafka_node(i) for i in range(len(settings.kafka_cluster_ports))]
    with _locked(settings):
        _ensure_kafka_jars()
        launched: list[tuple[_Spec, _Launch]] = []
        try:
            for spec in specs:
                launched.append((spec, _launch(spec, settings)))
            for spec, launch in launched:
                _await_ready(spec, settings, launch)
        except ServiceError:
            _stop([spec for spec, launch in launched if launch.fresh], settings)
            raise


def kafka_cluster_down() -> None:
    """Stop the cluster's nodes that have a live pid file, all at once (SIGTERM, SIGKILL after 20 s); blocks until
    they have exited. Nothing else is touched."""
    settings = _cluster_settings(_settings())
    with _locked(settings):
        _stop([_kafka_node(i) for i in range(len(settings.kafka_cluster_ports))], settings, together=True)


def kafka_cluster_status() -> list[ServiceStatus]:
    """Each node of the local Kafka cluster as running (live pid file) or stopped; drops stale pid files."""
    settings = _cluster_settings(_settings())
    return _status([_kafka_node(i) for i in range(len(settings.kafka_cluster_ports))], settings)


def _cluster(action: str, names: Sequence[str]) -> tuple[list[ServiceStatus], dict[str, str]]:
    """``action`` on the named parts (kafka, clickhouse) of the local cluster: Kafka starts first and stops last.
    Returns the status of each process and, after ``up``, the variables that point satpulse at it. Blocks and
    raises as :func:`kafka_cluster_up` and :func:`devtools.clickhouse_cluster.up`."""
    from devtools import clickhouse_cluster

    settings = _settings()
    if action == "up" and "kafka" in names:
        kafka_cluster_up()
    if action == "up" and "clickhouse" in names:
        clickhouse_cluster.up(settings)
    if action == "down" and "clickhouse" in names:
        clickhouse_cluster.down(settings)
    if action == "down" and "kafka" in names:
        kafka_cluster_down()
    statuses, env = [], {}
    if "kafka" in names:
        statuses += kafka_cluster_status()
        env.update(kafka_cluster_env(settings))
    if "clickhouse" in names:
        statuses += clickhouse_cluster.status(settings)
        env.update(SATPULSE_CLICKHOUSE_URL=clickhouse_cluster.replica_url(settings),
                   SATPULSE_CLICKHOUSE_CLUSTER=clickhouse_cluster.cluster_name(settings))
    return statuses, env if action == "up" else {}


def main(argv: list[str]) -> int:
    """``services up|down|status [--with-monitoring | --cluster] [SERVICE...]``; returns the process exit code.

    ``up`` without names starts kafka and clickhouse; ``--with-monitoring`` adds prometheus and alertmanager.
    ``down`` and ``status`` without names cover every service. ``--cluster`` acts on the local cluster instead
    (SERVICE: kafka, clickhouse; both by default) and after ``up`` prints the ``SATPULSE_*`` variables that point
    satpulse at it. Prints one line per service (process); errors go to stderr (exit code 2 for a missing
    prerequisite, 1 for any other failure).
    """
    parser = argparse.ArgumentParser(prog="satpulse services", description="local services without Docker")
    parser.add_argument("action", choices=("up", "down", "status"))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--with-monitoring", action="store_true", help="also prometheus and alertmanager")
    group.add_argument("--cluster", action="store_true",
                       help="the local cluster: 3 Kafka KRaft nodes, replicated ClickHouse with ZooKeeper")
    parser.add_argument("services", nargs="*", metavar="SERVICE", help=" | ".join(ALL_SERVICES))
    args = parser.parse_intermixed_args(argv)  # options may come after the names
    names: list[str] = list(args.services)
    known = CORE_SERVICES if args.cluster else ALL_SERVICES
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if not names:
        names = list(CORE_SERVICES) if args.action == "up" or args.cluster else list(ALL_SERVICES)
    if args.with_monitoring:
        names += [name for name in MONITORING_SERVICES if name not in names]
    env: dict[str, str] = {}
    try:
        if args.cluster:
            statuses, env = _cluster(args.action, names)
        else:
            if args.action == "up":
                ensure_up(names)
            elif args.action == "down":
                ensure_down(names)
            statuses = list(status(names).values())
    except MissingPrerequisiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in statuses:
        print(line.line())
    if env:
        print("point satpulse at the cluster with:\n" + "\n".join(f"  export {k}={v}" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
