"""Deleting rows with ``ALTER TABLE ... DELETE WHERE ...`` mutations: the one way that works on every engine we
support (ClickHouse 18.16 has neither lightweight ``DELETE`` nor ``mutations_sync``). On a cluster the mutation
runs ``ON CLUSTER`` on the replicated tables. ClickHouse applies a mutation in the background, rewriting the
parts that hold matching rows: count first, and :func:`wait_for_mutations` when the caller needs them gone."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sinks.clickhouse import ClickHouse
from sinks.migrations import data_table, on_cluster


def matching_rows(ch: ClickHouse, table: str, condition: str, params: Mapping[str, Any]) -> int:
    """How many rows of ``table`` match ``condition`` (SQL with ``%(name)s`` placeholders). Raises
    ClickHouseError."""
    return int(ch.query(f"SELECT count() FROM {ch.database}.{table} WHERE {condition}", params)[0][0])


def delete_rows(ch: ClickHouse, table: str, condition: str, params: Mapping[str, Any]) -> None:
    """Submit a mutation deleting the rows of ``table`` that match ``condition``; returns once it is submitted.
    Raises ClickHouseError."""
    # on a cluster: the replicated table, once per shard (its replicas apply the mutation too)
    ch.execute(f"ALTER TABLE {ch.database}.{data_table(ch, table)}{on_cluster(ch)} DELETE WHERE {condition}",
               dict(params))


def wait_for_mutations(ch: ClickHouse, timeout: float, poll: float = 0.2, table: str | None = None) -> bool:
    """Wait until every mutation of the database (of ``table`` only, if given) is done; False if some are still
    running after ``timeout`` seconds. Blocks; raises ClickHouseError."""
    deadline = time.monotonic() + timeout
    sql = "SELECT count() FROM system.mutations WHERE database = %(db)s AND is_done = 0"
    params = {"db": ch.database}
    if table is not None:
        sql += " AND table = %(table)s"
        params["table"] = data_table(ch, table)
    while True:
        if not int(ch.query(sql, params)[0][0]):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
