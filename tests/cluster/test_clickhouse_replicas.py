"""The migrations on the real two-replica cluster (ClickHouse 18.16 + ZooKeeper): Replicated* tables under
``{table}_local`` and a Distributed table under each table's own name; an acknowledged insert (quorum 2 of 2) is
on the other replica at once; and a rebuild (migrations 4 and 5) of tables holding rows copies them through the
cluster, leaving both replicas with the new sorting key and the same rows."""

from __future__ import annotations

import pytest

from domain.aggregates import WindowAgg
from domain.windows import CellRow
from sinks import migrations
from sinks.migrations import MIGRATIONS, MigrationRequired, migrate
from sinks.window_store import WindowStore
from tests.cluster.clickhouse_fixtures import Replicas, clickhouse_replicas, cluster_database

pytestmark = pytest.mark.cluster
__all__ = ["clickhouse_replicas", "cluster_database"]  # fixtures, imported to be found

TABLES = ("window_cells", "feedback_events", "ticket_events", "dead_letters", "dead_letter_replays",
          "schema_migrations")
TICKET_COLUMNS = ("ticket_id", "event_id", "status", "source", "channel", "event_time", "event_time_ms",
                  "ingest_time_ms", "source_partition", "source_offset")
CELLS_SQL = ("SELECT dimension, dimension_value, toUInt32(window_start), source_partition, version, rated, satisfied "
             "FROM {db}.window_cells FINAL ORDER BY dimension, dimension_value, window_start, source_partition")


def _engines(replicas: Replicas, number: int, database: str) -> dict[str, tuple[str, str]]:
    """table -> (engine, sorting key) on replica ``number``."""
    ch = replicas.connect_replica(number, database)
    try:
        return {name: (engine, key) for name, engine, key in ch.query(
            "SELECT name, engine, sorting_key FROM system.tables WHERE database = %(d)s", {"d": database})}
    finally:
        ch.close()


def test_migrations_replicate_and_rebuild_tables_holding_rows(clickhouse_replicas: Replicas, cluster_database: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    replicas, db = clickhouse_replicas, cluster_database
    ch = replicas.connect(db)
    try:
        monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:3])  # the schema before the rebuilds
        assert migrate(ch) == [1, 2, 3]
        monkeypatch.undo()
        store = WindowStore(ch, "fb", "tk", 60)
        source = ("fb", 0)
        store.write([CellRow(source, ("channel", "chat", 60_000), WindowAgg(rated=2, satisfied=1), 5),
                     CellRow(source, ("channel", "email", 60_000), WindowAgg(rated=1, satisfied=1), 5)], [], [])
        store.write([CellRow(source, ("channel", "chat", 60_000), WindowAgg(rated=3, satisfied=2), 9)], [], [])
        # a case event stored twice (a clean-stage replay at a later offset) and another one
        ch.insert(f"{db}.ticket_events", TICKET_COLUMNS, [
            ("T1", "e1", "created", "s", "chat", 1_700_000_000, 1, 1, 0, 7),
            ("T1", "e1", "created", "s", "chat", 1_700_000_000, 1, 1, 0, 12),
            ("T2", "e2", "created", "s", "chat", 1_700_000_000, 1, 1, 1, 3)])

        # acknowledged with quorum 2 of 2: replica 2 holds every row already, without waiting for replication
        second = replicas.connect_replica(2, db)
        try:
            assert second.query(f"SELECT count() FROM {db}.window_cells_local")[0][0] == 3
            assert second.query(f"SELECT count() FROM {db}.ticket_events_local")[0][0] == 3
        finally:
            second.close()

        cells = ch.query(CELLS_SQL.format(db=db))
        assert cells == [("channel", "chat", 60, 0, 9, 3, 2), ("channel", "email", 60, 0, 5, 1, 1)]
        with pytest.raises(MigrationRequired) as required:
            migrate(ch)
        assert required.value.versions == [4, 5]
        assert migrate(ch, rebuild=True) == [4, 5, 6, 7]
        assert migrate(ch) == []

        assert ch.query(CELLS_SQL.format(db=db)) == cells  # the same rows under the new key
        # one row per case event, the earliest copy winning (copy_rank, an ALIAS on the Distributed table)
        assert ch.query(f"SELECT ticket_id, source_offset, copy_rank FROM {db}.ticket_events FINAL "
                        "ORDER BY ticket_id") == [("T1", 7, 2**64 - 1 - 7), ("T2", 3, 2**64 - 1 - 3)]
    finally:
        ch.close()

    first, second_engines = _engines(replicas, 1, db), _engines(replicas, 2, db)
    assert first == second_engines
    for table in TABLES:
        assert first[table][0] == "Distributed"
        assert first[f"{table}_local"][0].startswith("Replicated")
    assert first["window_cells_local"][1] == ("window_seconds, dimension, window_start, dimension_value, "
                                              "source_topic, source_partition")
    assert first["ticket_events_local"][1] == "ticket_id, event_id"
    for number in (1, 2):  # both replicas hold the copied rows
        replica = replicas.connect_replica(number, db)
        try:
            replica.execute(f"SYSTEM SYNC REPLICA {db}.window_cells_local")
            assert replica.query(f"SELECT count() FROM {db}.window_cells_local FINAL")[0][0] == 2
        finally:
            replica.close()
