"""Session fixtures that bring up the local services (``devtools.services``) for integration tests.

Services already running when the session starts are used as they are and left running; whatever a
fixture had to start is stopped again when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from devtools import services as local_services
from devtools.services import ServiceError, ServiceStatus
from sinks.clickhouse import ClickHouse, connect
from sinks.migrations import migrate
from tests.integration.offline import clickhouse_url


def _session_services(names: Sequence[str]) -> Iterator[dict[str, ServiceStatus]]:
    already = {name for name, st in local_services.status(names).items() if st.state == "running"}
    try:
        local_services.ensure_up(names)
    except ServiceError as exc:
        local_services.ensure_down([name for name in names if name not in already])
        pytest.fail(str(exc), pytrace=False)
    try:
        yield local_services.status(names)
    finally:
        started = [name for name in names if name not in already]
        if started:
            local_services.ensure_down(started)


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, ServiceStatus]]:
    """Kafka and the ClickHouse server, running and answering; maps name -> status at session start."""
    yield from _session_services(["kafka", "clickhouse"])


@pytest.fixture(scope="session")
def monitoring() -> Iterator[dict[str, ServiceStatus]]:
    """Prometheus and Alertmanager, running and ready; maps name -> status at session start."""
    yield from _session_services(["prometheus", "alertmanager"])


@pytest.fixture(params=["chdb", "server"])
def ch(request: pytest.FixtureRequest, services: dict[str, ServiceStatus], tmp_path: Path) -> Iterator[ClickHouse]:
    """A fresh, migrated store on each engine: a chDB directory, then a new database on the local server."""
    engine = connect(clickhouse_url(request.param, tmp_path))
    migrate(engine)
    assert migrate(engine) == []  # idempotent
    yield engine
    engine.close()
