"""Session fixtures of the ``cluster`` tests (issue 17): the local 3-node Kafka cluster of ``satpulse services up
--cluster`` and a Prometheus of their own that scrapes one worker.

Nodes already running when the session starts are used as they are and left running; whatever a fixture had to
start is stopped again when the session ends (pid files, :mod:`devtools.services`). Nothing here uses the
single-node services of tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devtools import services as local_services
from devtools.services import CONFIG_DIR, ServiceError
from satpulse.settings import get_settings
from tests.integration.offline import free_port
from tests.integration.test_alerting import Prometheus

# alerts whose `for:` the cluster tests' Prometheus shortens (production value -> test value); everything else
# in the rules (expressions, thresholds, guards, labels) is the production rule
SHORTENED_FOR = {"SatpulseCsatLow": ("5m", "2s"), "SatpulseSinkFailing": ("5m", "2s")}


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in os.environ (and in a fresh :func:`get_settings`) for the block only."""
    patch = pytest.MonkeyPatch()
    for key, value in values.items():
        patch.setenv(key, value)
    get_settings.cache_clear()
    try:
        yield
    finally:
        patch.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[dict[str, str]]:
    """The local Kafka cluster, every node answering with all nodes live; yields the ``SATPULSE_*`` variables that
    point a worker or a :class:`~satpulse.settings.Settings` at it (bootstrap, replication factor 3, min ISR 2)."""
    already = {st.name for st in local_services.kafka_cluster_status() if st.state == "running"}
    try:
        local_services.kafka_cluster_up()
    except ServiceError as exc:
        if not already:
            local_services.kafka_cluster_down()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield local_services.kafka_cluster_env()
    finally:
        if not already:
            local_services.kafka_cluster_down()


def _rules_copy(target: Path) -> Path:
    """A copy of config/prometheus/rules/ with the `for:` of :data:`SHORTENED_FOR` shortened."""
    target.mkdir(parents=True, exist_ok=True)
    changed = set()
    for path in sorted((CONFIG_DIR / "prometheus" / "rules").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for rule in (rule for group in doc["groups"] for rule in group["rules"]):
            if rule.get("alert") in SHORTENED_FOR:
                production, test = SHORTENED_FOR[rule["alert"]]
                assert rule["for"] == production, f"{rule['alert']}: production `for:` changed, update SHORTENED_FOR"
                rule["for"] = test
                changed.add(rule["alert"])
        (target / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    assert changed == set(SHORTENED_FOR)
    return target


@dataclass(frozen=True)
class Monitoring:
    """A running Prometheus (rules of :func:`_rules_copy`, scrape and evaluation every 1 s) and the one worker
    /metrics port it scrapes (job satpulse-worker)."""

    prometheus: Prometheus
    worker_port: int


@pytest.fixture(scope="session")
def cluster_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    """A Prometheus of the cluster tests: own work dir and free ports (never the session's or a developer's);
    stopped at the end of the session. Alerts are read from its API (no Alertmanager)."""
    work = tmp_path_factory.mktemp("cluster-monitoring")
    worker_port = free_port()
    env = {"SATPULSE_WORK_DIR": str(work), "SATPULSE_PROMETHEUS_PORT": str(free_port()),
           "SATPULSE_ALERTMANAGER_PORT": str(free_port()), "SATPULSE_WORKER_WEB_PORT": str(worker_port)}
    try:
        with _environment(env):
            local_services.ensure_up(["prometheus"])
        prometheus = Prometheus(int(env["SATPULSE_PROMETHEUS_PORT"]))
        config = work / "prometheus" / "prometheus.yml"  # rendered by devtools.services: point it at the copy
        production = str(CONFIG_DIR / "prometheus" / "rules")
        config.write_text(config.read_text().replace(production, str(_rules_copy(work / "rules"))))
        prometheus.reload()
    except ServiceError as exc:
        with _environment(env):
            local_services.ensure_down(["prometheus"])
        pytest.fail(str(exc), pytrace=False)
    try:
        yield Monitoring(prometheus, worker_port)
    finally:
        with _environment(env):
            local_services.ensure_down(["prometheus"])
