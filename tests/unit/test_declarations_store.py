"""The declarations against ClickHouse (embedded chDB; the Debian 18.16 server too when the integration
services run): the migrations create exactly the declared columns, and one more metric or dimension gets its
column from migrate's derived step, with no hand-written ALTER, then round-trips through the store by name."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain import entities
from domain.aggregates import WindowAgg
from domain.windows import CellRow
from sinks import window_store
from sinks.clickhouse import ClickHouse, connect
from sinks.declared_columns import CELLS, KEY_COLUMNS, VERSION_COLUMNS, CellLayout, dimension_columns
from sinks.migrations import add_declared_columns, migrate
from tests.integration.offline import clickhouse_url
from tests.unit.test_declarations import WithPromoters

EVENT_TABLES = ("feedback_events", "ticket_events")


@pytest.fixture(params=["chdb", pytest.param("server", marks=pytest.mark.integration)])
def ch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClickHouse]:
    """A fresh, migrated store: chDB, or a new database on the local ClickHouse server (18.16)."""
    if request.param == "server":
        request.getfixturevalue("services")
    engine = connect(clickhouse_url(request.param, tmp_path, prefix="decl"))
    migrate(engine)
    yield engine
    engine.close()


def columns(ch: ClickHouse, table: str) -> list[tuple[str, str]]:
    """(name, type) of the columns of ``table``, in table order (18.16 has no system.columns.position)."""
    return [(str(name), str(type_)) for name, type_ in ch.query(
        "SELECT name, type FROM system.columns WHERE database = %(d)s AND table = %(t)s",
        {"d": ch.database, "t": table})]


def test_the_migrations_create_the_declared_columns(ch: ClickHouse) -> None:
    cells = columns(ch, "window_cells")
    assert [name for name, _ in cells] == list(CELLS.columns)
    assert [c for c in cells if c[0] not in (*KEY_COLUMNS, *VERSION_COLUMNS)] == [
        (c.name, c.type) for c in CELLS.agg_columns]
    for table in EVENT_TABLES:
        assert set(entities.DIMENSION_FIELDS) <= {name for name, _ in columns(ch, table)}
    assert add_declared_columns(ch) == []  # nothing declared is missing


def test_one_more_metric_gets_its_column_and_round_trips(ch: ClickHouse) -> None:
    """A cell written before the metric existed reads it as 0; cells of two sources merge with it."""
    old = WindowAgg(rated=2, satisfied=1, score_hist=[0, 0, 0, 1, 1], resolution_sketch={7: 2})
    ch.insert(f"{ch.database}.window_cells", CELLS.columns, [CELLS.row(CellRow(("t", 0), ("all", "all", 0), old, 1),
                                                                       60, 0)])
    layout = CellLayout(WithPromoters)
    assert add_declared_columns(ch, {"window_cells": layout.agg_columns}) == ["window_cells.promoters"]
    assert add_declared_columns(ch, {"window_cells": layout.agg_columns}) == []  # idempotent
    new = WithPromoters(rated=3, satisfied=3, promoters=2, score_hist=[1, 0, 0, 0, 2], resolution_sketch={7: 1, 9: 4})
    ch.insert(f"{ch.database}.window_cells", layout.columns,
              [layout.row(CellRow(("t", 1), ("all", "all", 0), new, 5), 60, 0)])

    def read(select: str, where: str) -> WithPromoters:
        [row] = ch.query(f"SELECT {select} FROM {ch.database}.window_cells FINAL WHERE {where}")
        return layout.decode(row)

    assert read(layout.single_sql, "source_partition = 0") == WithPromoters(
        rated=2, satisfied=1, score_hist=[0, 0, 0, 1, 1], resolution_sketch={7: 2})
    assert read(layout.single_sql, "source_partition = 1") == new
    expected = WithPromoters(rated=5, satisfied=4, promoters=2, score_hist=[1, 0, 0, 1, 3],
                             resolution_sketch={7: 3, 9: 4})
    assert read(layout.merged_sql, "window_seconds = 60") == expected


@pytest.fixture
def region(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ...]]:
    """DIMENSION_FIELDS with one more dimension, and the window store rebuilt from it (restored after)."""
    declared = (*entities.DIMENSION_FIELDS, "region")
    monkeypatch.setattr(entities, "DIMENSION_FIELDS", declared)
    importlib.reload(window_store)
    yield declared
    monkeypatch.undo()
    importlib.reload(window_store)


def test_one_more_dimension_gets_its_columns_and_is_read_back_by_name(ch: ClickHouse,
                                                                      region: tuple[str, ...]) -> None:
    declared = {table: dimension_columns(region) for table in EVENT_TABLES}
    assert add_declared_columns(ch, declared) == ["feedback_events.region", "ticket_events.region"]
    base = {"source": "s", "channel": "chat", "ingest_time": 0, "agent": "a", "team": None, "category": None,
            "product": None, "customer_id": None, "region": "emea"}
    feedback = {**base, "event_id": "e1", "rating_id": "r1", "rating_version": 1, "event_time": 61_000,
                "ticket_id": None, "native_value": "5", "native_scale": "1-5", "score": 5.0, "satisfied": True,
                "comment": None}
    ticket = {**base, "event_id": "t1-0", "ticket_id": "t1", "status": "created", "event_time": 62_000,
              "priority": "high"}
    store = window_store.WindowStore(ch, "fb", "tk", 60)
    store.write([], [(0, 4, feedback)], [(0, 5, ticket)])

    rating = store.load_ratings(("fb", 0), ["r1"], 10)["r1"]
    assert dict(rating.dims) == {name: base[name] for name in region}
    assert rating == entities.rating_state(feedback)
    [event] = store.load_ticket_events(("tk", 0), ["t1"], 10)["t1"]
    assert event["region"] == "emea" and event["event_time"] == 62_000 and event["priority"] == "high"
