"""Local Kafka, ClickHouse, Prometheus and Alertmanager without Docker: ``satpulse services up|down|status``.

Each service runs as a detached process started from the binaries installed on the machine (Kafka from the
jars that ``services/kafka/pom.xml`` fetches). Its rendered config, pid file, log and recorded start-up time
live in ``<work_dir>/<name>/``. Only processes recorded in those pid files are ever stopped. Operations on the
same work dir are serialised by a file lock, so concurrent test sessions do not race.
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
    address: Callable[[Settings], str]
    port: Callable[[Settings], int]
    check: Callable[[], None]  # raises MissingPrerequisiteError
    prepare: Callable[[Settings, Path], list[str]]  # renders config, formats storage; returns argv
    probe: Callable[[Settings], bool]  # True once the service answers

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


def _kafka_prepare(settings: Settings, home: Path) -> list[str]:
    java = _java()
    properties = home / "server.properties"
    _render(CONFIG_DIR / "kafka" / "server.properties", properties, _values(settings))
    if not (home / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [java, *_kafka_java_args(), "kafka.tools.StorageTool", "format"]
        cmd += ["-t", cluster_id, "-c", str(properties), "--standalone"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(f"kafka storage format failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return [java, "-Xms256m", "-Xmx1g", *_kafka_java_args(), "kafka.Kafka", str(properties)]


def _kafka_probe(settings: Settings) -> bool:
    if not _port_open(settings.kafka_port):
        return False
    from kafka import KafkaConsumer
    from kafka.errors import KafkaConfigurationError, KafkaError

    try:
        with _quiet("kafka"):
            consumer = KafkaConsumer(
                bootstrap_servers=f"127.0.0.1:{settings.kafka_port}",
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
            )
            try:
                consumer.topics()  # a MetadataRequest
            finally:
                consumer.close()
    except KafkaConfigurationError:
        raise
    except (KafkaError, OSError):
        return False
    return True


# ----------------------------------------------------------------------------------------------- clickhouse


def _clickhouse_check() -> None:
    _which("clickhouse-server", "apt-get install -y clickhouse-server")


def _clickhouse_prepare(settings: Settings, home: Path) -> list[str]:
    server = _which("clickhouse-server", "apt-get install -y clickhouse-server")
    for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    _render(CONFIG_DIR / "clickhouse" / "config.xml", home / "config.xml", _values(settings))
    _render(CONFIG_DIR / "clickhouse" / "users.xml", home / "users.xml", _values(settings))
    return [server, f"--config-file={home / 'config.xml'}"]


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
        address=lambda s: f"127.0.0.1:{s.kafka_port}",
        port=lambda s: s.kafka_port,
        check=_kafka_check,
        prepare=_kafka_prepare,
        probe=_kafka_probe,
    ),
    "clickhouse": _Spec(
        name="clickhouse",
        ready_timeout=60.0,
        address=lambda s: f"127.0.0.1:{s.clickhouse_native_port}",
        port=lambda s: s.clickhouse_native_port,
        check=_clickhouse_check,
        prepare=_clickhouse_prepare,
        probe=_clickhouse_probe,
    ),
    "prometheus": _Spec(
        name="prometheus",
        ready_timeout=60.0,
        address=lambda s: f"http://127.0.0.1:{s.prometheus_port}",
        port=lambda s: s.prometheus_port,
        check=_prometheus_check,
        prepare=_prometheus_prepare,
        probe=lambda s: _http_ready(s.prometheus_port),
    ),
    "alertmanager": _Spec(
        name="alertmanager",
        ready_timeout=60.0,
        address=lambda s: f"http://127.0.0.1:{s.alertmanager_port}",
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


def _start(spec: _Spec, settings: Settings) -> None:
    home = spec.dir(settings)
    home.mkdir(parents=True, exist_ok=True)
    pid = _read_pid(spec, settings)
    if pid is not None:
        if not spec.probe(settings):  # started elsewhere and still starting: wait for it
            _wait_ready(spec, settings, pid, time.monotonic())
        return
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
    _wait_ready(spec, settings, process.pid, started)
    seconds = round(time.monotonic() - started, 2)
    spec.startup_file(settings).write_text(json.dumps({"seconds": seconds, "started_at": time.time()}))


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
        if "kafka" in names and not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
            _kafka_fetch_jars()
        for spec in specs:
            _start(spec, settings)


def ensure_down(names: Sequence[str]) -> None:
    """Stop the named services that have a live pid file: SIGTERM, then SIGKILL after 20 s.

    Blocks until they have exited. Processes not recorded in a pid file are never touched. Raises ValueError
    for an unknown name.
    """
    settings = _settings()
    with _locked(settings):
        for spec in reversed(_specs(names)):
            pid = _read_pid(spec, settings)
            if pid is not None:
                _stop_pid(pid, spec, settings)
                spec.pid_file(settings).unlink(missing_ok=True)


def status(names: Sequence[str] = ALL_SERVICES) -> dict[str, ServiceStatus]:
    """Report each named service as running (live pid file) or stopped; drops stale pid files."""
    settings = _settings()
    result: dict[str, ServiceStatus] = {}
    for spec in _specs(names):
        pid = _read_pid(spec, settings)
        result[spec.name] = ServiceStatus(
            name=spec.name,
            state="running" if pid is not None else "stopped",
            pid=pid,
            address=spec.address(settings),
            startup_seconds=_startup_seconds(spec, settings) if pid is not None else None,
        )
    return result


def main(argv: list[str]) -> int:
    """``services up|down|status [--with-monitoring] [SERVICE...]``; returns the process exit code.

    ``up`` without names starts kafka and clickhouse; ``--with-monitoring`` adds prometheus and alertmanager.
    ``down`` and ``status`` without names cover every service. Prints one line per service; errors go to
    stderr (exit code 2 for a missing prerequisite, 1 for any other failure).
    """
    parser = argparse.ArgumentParser(prog="satpulse services", description="local services without Docker")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--with-monitoring", action="store_true", help="also prometheus and alertmanager")
    parser.add_argument("services", nargs="*", metavar="SERVICE", help=" | ".join(ALL_SERVICES))
    args = parser.parse_args(argv)
    names: list[str] = list(args.services)
    unknown = sorted(set(names) - set(ALL_SERVICES))
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(ALL_SERVICES)}")
    if not names:
        names = list(CORE_SERVICES) if args.action == "up" else list(ALL_SERVICES)
    if args.with_monitoring:
        names += [name for name in MONITORING_SERVICES if name not in names]
    try:
        if args.action == "up":
            ensure_up(names)
        elif args.action == "down":
            ensure_down(names)
    except MissingPrerequisiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in status(names).values():
        print(line.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
