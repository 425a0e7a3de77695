"""ClickHouseError classification against the real engines (chDB in-process and the Debian ClickHouse server):
a statement ClickHouse refuses is permanent with the server's code, an unreachable server is transient, and the
retry loop stops on request while it is stuck on a permanent error."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from satpulse import metrics
from sinks.clickhouse import ClickHouse, ClickHouseError, connect
from sinks.retry import RetryStopped, retry_clickhouse
from tests.integration.offline import free_port

pytestmark = pytest.mark.integration

SECRET = "jane.doe@example.com"  # a parameter value: it must never end up in ClickHouseError.statement


def refused(call: Callable[[], object]) -> ClickHouseError:
    """The ClickHouseError ``call`` raises (the test fails if it raises none)."""
    with pytest.raises(ClickHouseError) as raised:
        call()
    return raised.value


def test_syntax_error_is_permanent_with_code_62(ch: ClickHouse) -> None:
    error = refused(lambda: ch.execute("SELEC %(email)s", {"email": SECRET}))
    assert (error.code, error.permanent) == (62, True)
    assert error.statement == "SELEC %(email)s"


def test_unknown_table_is_permanent(ch: ClickHouse) -> None:
    error = refused(lambda: ch.query(f"SELECT count() FROM {ch.database}.no_such_table"))
    assert (error.code, error.permanent) == (60, True)


def test_value_that_does_not_fit_its_column_is_permanent_and_keeps_no_values(ch: ClickHouse) -> None:
    ch.execute(f"CREATE TABLE {ch.database}.small (n UInt8, email String) ENGINE = MergeTree ORDER BY n")
    error = refused(lambda: ch.insert(f"{ch.database}.small", ["n", "email"], [["not a number", SECRET]]))
    assert error.permanent and error.code is not None
    assert error.statement is not None and error.statement.startswith(f"INSERT INTO {ch.database}.small (n, email)")
    assert SECRET not in error.statement


def test_unreachable_server_is_transient() -> None:
    error = refused(lambda: connect(f"clickhouse://default:@127.0.0.1:{free_port()}/satpulse"))
    assert (error.code, error.permanent) == (210, False)  # clickhouse-driver: NETWORK_ERROR, connection refused


def test_retry_loop_on_a_permanent_error_counts_it_and_stops_on_request(ch: ClickHouse) -> None:
    labels = {"sink": "clickhouse", "kind": "permanent"}
    before = metrics.REGISTRY.get_sample_value("satpulse_sink_errors_total", labels) or 0.0
    stopping = threading.Event()
    timer = threading.Timer(1.0, stopping.set)
    timer.start()
    try:
        with pytest.raises(RetryStopped) as raised:
            retry_clickhouse("test", lambda: ch.execute("SELEC 1"), stopping=stopping)
    finally:
        timer.cancel()
    assert isinstance(raised.value.__cause__, ClickHouseError) and raised.value.__cause__.code == 62
    assert (metrics.REGISTRY.get_sample_value("satpulse_sink_errors_total", labels) or 0.0) >= before + 2
    assert metrics.REGISTRY.get_sample_value("satpulse_sink_blocked_permanent", {"sink": "clickhouse"}) == 0.0
