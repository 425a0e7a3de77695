"""The single-node DDL as the cluster sees it, and the replica list of a ClickHouse URL (no server needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from sinks.clickhouse import _hosts, connect
from sinks.migrations import MIGRATIONS, _create, _replicated


@dataclass
class Recorder:
    """A ClickHouse that records statements and knows no tables."""

    cluster: str | None
    database: str = "db"
    statements: list[str] = field(default_factory=list)

    def execute(self, sql: str, params: Any = None) -> None:
        self.statements.append(sql)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return [(0,)]


@pytest.mark.parametrize(("engine", "replicated"), [
    ("ReplacingMergeTree(version)\n        ORDER BY (a, b)",
     "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/t_v4', '{replica}', version)\n"
     "        ORDER BY (a, b)"),
    ("ReplacingMergeTree\n        PARTITION BY toYYYYMM(event_time)\n        ORDER BY (a, b)",
     "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/t_v4', '{replica}')\n"
     "        PARTITION BY toYYYYMM(event_time)\n        ORDER BY (a, b)"),
    ("MergeTree ORDER BY a", "ReplicatedMergeTree('/clickhouse/tables/{shard}/db/t_v4', '{replica}') ORDER BY a"),
    ("AggregatingMergeTree() ORDER BY a",
     "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/t_v4', '{replica}') ORDER BY a"),
])
def test_every_merge_tree_engine_has_a_replicated_form_with_a_path_per_creating_migration(
        engine: str, replicated: str) -> None:
    assert _replicated(Recorder("c"), 4, "t", engine) == replicated
    assert _replicated(Recorder(None), 4, "t", engine) == engine  # one server: as written


def test_every_table_of_the_migrations_translates() -> None:
    """Each CREATE step becomes one CREATE ... ON CLUSTER of ``{table}_local`` with a replicated engine."""
    for version, steps in MIGRATIONS:
        for step in steps:
            if isinstance(step, str):
                ch = Recorder("c")
                table = _create(ch, version, step)
                (statement,) = ch.statements
                assert statement.startswith(f"CREATE TABLE IF NOT EXISTS db.{table}_local ON CLUSTER c (")
                assert "ENGINE = Replicated" in statement and f"/db/{table}_v{version}'" in statement


def test_a_url_names_one_host_or_every_replica_in_order() -> None:
    assert _hosts("127.0.0.1:19100,127.0.0.1:19200") == [("127.0.0.1", 19100), ("127.0.0.1", 19200)]
    assert _hosts("ch1,[::1]:9001") == [("ch1", 9000), ("::1", 9001)]
    assert _hosts("") == [("127.0.0.1", 9000)]


def test_chdb_has_no_cluster(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="clickhouse_cluster"):
        connect(f"chdb://{tmp_path}", cluster="satpulse")
