"""ClickHouse schema, managed in code: numbered migrations applied in order, each once.

Two kinds of migration (docs/operations.md#upgrades): one that only creates tables or adds columns is safe
while workers run, and every worker applies it at start-up (:func:`migrate`); one that rebuilds a table
(:class:`Rekey`) needs every worker stopped, so a worker refuses to start while one is pending for a table that
holds data (:class:`MigrationRequired`) and ``satpulse migrate`` applies it (``migrate(ch, rebuild=True)``).

After the numbered migrations, a derived step adds every column the domain declares that a table lacks
(:data:`sinks.declared_columns.DECLARED_COLUMNS`: a new field of ``WindowAgg``, a new dimension), so adding
one needs no hand-written ALTER. Released steps keep the columns of their time.

Runs on ClickHouse 18.16 (Debian) and current ClickHouse (chDB, docker-compose) alike, so it avoids
DateTime64, ``IF NOT EXISTS`` on columns and dedup tokens. Idempotence comes from the table design:
ReplacingMergeTree keyed by identity — window cells by cell and source, versioned by source offset; clean
events by event (since migration 5), the copy at the earliest offset winning — and readers use FINAL or argMax.

On a cluster (``ch.cluster``, setting ``clickhouse_cluster``) the same steps run ``ON CLUSTER``, translated in one
place (:func:`_replicated`): each table's rows live in ``{table}_local``, a Replicated* version of the engine with
ZooKeeper path ``/clickhouse/tables/{shard}/{db}/{table}_v{migration}`` and replica ``{replica}`` (macros of each
server), and ``{table}`` itself becomes a Distributed table over them, sharded by a hash of the sorting key (every
version of a row on one shard, so FINAL and the replacing engines work per shard). Readers and writers keep using
``{table}``. A Distributed table copies its columns when created, so after a step changes a local table the
Distributed one is rebuilt to match (:func:`_sync_distributed`) and swapped in by one RENAME.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

from sinks.clickhouse import ClickHouse, ClickHouseError
from sinks.declared_columns import DECLARED_COLUMNS, Column

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AddColumn:
    """``ALTER TABLE ... ADD COLUMN`` made idempotent: ClickHouse 18.16 has no ``ADD COLUMN IF NOT EXISTS``."""

    table: str
    column: str
    type: str


@dataclass(frozen=True)
class Rekey:
    """Rebuild ``table`` with a new sorting key (ClickHouse cannot change ORDER BY in place): copy it into a table
    of the same structure, then swap the names in one RENAME; the old table stays as ``{table}_previous`` (drop
    it once satisfied; docs/operations.md). Idempotent: once ``{table}_previous`` exists, nothing is done.
    Run it with the workers stopped (rows written during the copy could be missed)."""

    table: str
    engine: str


# (version, steps); {db} in SQL is replaced by the database name. Append only: never edit a released step.
# A plain SQL step must be safe while workers write (CREATE TABLE IF NOT EXISTS); a step that rebuilds a table
# is a Rekey, which makes its migration one for `satpulse migrate` only.
MIGRATIONS: tuple[tuple[int, tuple[str | AddColumn | Rekey, ...]], ...] = (
    (1, (
        # full state of one window cell contributed by one source (topic, partition); the highest version
        # (= highest source offset included) wins. Not partitioned, so that one insert is atomic.
        """CREATE TABLE IF NOT EXISTS {db}.window_cells (
            dimension String,
            dimension_value String,
            window_seconds UInt32,
            window_start DateTime,
            source_topic String,
            source_partition UInt16,
            rated UInt64,
            satisfied UInt64,
            scored UInt64,
            score_micros UInt64,
            score_hist Array(UInt64),
            created UInt64,
            reopened UInt64,
            first_responses UInt64,
            first_response_ms UInt64,
            first_response_sketch_keys Array(UInt16),
            first_response_sketch_counts Array(UInt64),
            first_response_breaches UInt64,
            resolved UInt64,
            resolution_ms UInt64,
            resolution_sketch_keys Array(UInt16),
            resolution_sketch_counts Array(UInt64),
            resolution_breaches UInt64,
            version UInt64,
            written_at DateTime
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (dimension, dimension_value, window_seconds, window_start, source_topic, source_partition)""",
        # every version of every rating as cleaned; latest version = argMax(..., rating_version)
        """CREATE TABLE IF NOT EXISTS {db}.feedback_events (
            rating_id String,
            rating_version UInt64,
            event_id String,
            source String,
            channel String,
            event_time DateTime,
            event_time_ms UInt64,
            ingest_time_ms UInt64,
            ticket_id Nullable(String),
            agent Nullable(String),
            team Nullable(String),
            category Nullable(String),
            product Nullable(String),
            customer_id Nullable(String),
            native_value Nullable(String),
            native_scale Nullable(String),
            score Nullable(Float64),
            satisfied Nullable(UInt8),
            comment Nullable(String),
            sentiment Nullable(Float64),
            source_partition UInt16,
            source_offset UInt64
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(event_time)
        ORDER BY (rating_id, rating_version, source_partition, source_offset)""",
        # every support-case lifecycle event as cleaned
        """CREATE TABLE IF NOT EXISTS {db}.ticket_events (
            ticket_id String,
            event_id String,
            status String,
            source String,
            channel String,
            event_time DateTime,
            event_time_ms UInt64,
            ingest_time_ms UInt64,
            priority Nullable(String),
            agent Nullable(String),
            team Nullable(String),
            category Nullable(String),
            product Nullable(String),
            customer_id Nullable(String),
            source_partition UInt16,
            source_offset UInt64
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(event_time)
        ORDER BY (ticket_id, event_id, source_partition, source_offset)""",
    )),
    (2, (
        # every dead letter (schemas/dead_letter.avsc) once per origin, stage and reason: a dead letter produced
        # or consumed twice (retry, replay) replaces itself. Origins without a Kafka position have topic '',
        # partition and offset -1 and an origin_ref (path:line). Not partitioned: FINAL then sees every copy.
        """CREATE TABLE IF NOT EXISTS {db}.dead_letters (
            origin_topic String,
            origin_partition Int32,
            origin_offset Int64,
            origin_ref String,
            stage String,
            reason String,
            detail String,
            payload String,
            failed_at DateTime,
            failed_at_ms UInt64,
            dead_letter_partition UInt16,
            dead_letter_offset UInt64,
            received_at DateTime
        ) ENGINE = ReplacingMergeTree
        ORDER BY (origin_topic, origin_partition, origin_offset, origin_ref, stage, reason)""",
    )),
    (3, (
        # feedback_event v2 (schemas/history/feedback_event/v2.avsc): text-model provenance, the survey, and the
        # answers to its other questions as parallel arrays (never counted in windows)
        AddColumn("feedback_events", "sentiment_label", "Nullable(String)"),
        AddColumn("feedback_events", "sentiment_model", "Nullable(String)"),
        AddColumn("feedback_events", "survey_id", "Nullable(String)"),
        AddColumn("feedback_events", "secondary_question_ids", "Array(String)"),
        AddColumn("feedback_events", "secondary_native_values", "Array(String)"),
        AddColumn("feedback_events", "secondary_native_scales", "Array(String)"),
        AddColumn("feedback_events", "secondary_scores", "Array(Nullable(Float64))"),
        AddColumn("feedback_events", "secondary_satisfied", "Array(Nullable(UInt8))"),
    )),
    (4, (
        # the stream reads window cells by window size and time (totals every tick, roll-ups, late corrections,
        # rolling gauges) and dashboards by dimension and time: with (dimension, dimension_value, ...) first,
        # every one of those read the whole table, so each batch got slower as the table grew
        Rekey("window_cells", "ReplacingMergeTree(version) ORDER BY (window_seconds, dimension, window_start, "
                              "dimension_value, source_topic, source_partition)"),
    )),
    (5, (
        # one row per clean event: a clean-stage replay (a crash after publishing, before the ingest commit)
        # publishes the event again at a later offset, which the offset-keyed tables kept as a second row
        # (FINAL counted it twice). Keyed by identity, the earliest copy wins (copy_rank = bitNot(offset)): a
        # reader that sees only offsets up to its source's high-water mark still finds an event it counted.
        AddColumn("feedback_events", "copy_rank", "UInt64 MATERIALIZED bitNot(source_offset)"),
        AddColumn("ticket_events", "copy_rank", "UInt64 MATERIALIZED bitNot(source_offset)"),
        Rekey("feedback_events", "ReplacingMergeTree(copy_rank) PARTITION BY toYYYYMM(event_time) "
                                 "ORDER BY (rating_id, rating_version, event_id)"),
        Rekey("ticket_events", "ReplacingMergeTree(copy_rank) PARTITION BY toYYYYMM(event_time) "
                               "ORDER BY (ticket_id, event_id)"),
    )),
    (6, (
        # a dead letter carries at most dead_letter_payload_max_bytes of its payload: the whole one's size and
        # hash (0 and '' for rows stored before)
        AddColumn("dead_letters", "payload_size", "UInt64"),
        AddColumn("dead_letters", "payload_sha256", "String"),
    )),
    (7, (
        # dead letters re-sent to the ingest topic by `satpulse dead-letters replay`, once per origin (the
        # latest replay wins): a later replay skips them unless asked again (docs/dead-letters.md#tools)
        """CREATE TABLE IF NOT EXISTS {db}.dead_letter_replays (
            origin_topic String,
            origin_partition Int32,
            origin_offset Int64,
            origin_ref String,
            payload_sha256 String,
            ingest_topic String,
            replayed_at DateTime
        ) ENGINE = ReplacingMergeTree(replayed_at)
        ORDER BY (origin_topic, origin_partition, origin_offset, origin_ref)""",
    )),
)


class MigrationRequired(Exception):
    """Pending migrations rebuild tables that hold data, which needs every worker stopped. Deliberately not a
    ClickHouseError: retrying cannot help, so a worker ends with this message instead of waiting."""

    def __init__(self, versions: list[int]) -> None:
        self.versions = versions
        numbers = ", ".join(map(str, versions))
        super().__init__(f"ClickHouse migration(s) {numbers} rebuild tables that hold data: "
                         "stop all workers and run `satpulse migrate`, then start the workers again")


def migrate(ch: ClickHouse, rebuild: bool = False) -> list[int]:
    """Apply every migration not yet recorded, in order, then add the declared columns the tables lack
    (:func:`add_declared_columns`); returns the versions applied now. Blocks; raises ClickHouseError.

    Without ``rebuild`` (a worker's start-up): raises MigrationRequired, before changing anything, when a
    pending migration would rebuild a table that holds rows (live workers may be writing to it); a rebuild of
    an empty or not yet created table (a fresh database) runs, since nothing is at stake. Safe to run
    concurrently from several workers starting on a fresh database (every statement is idempotent, and a table
    one of them rebuilt already is not rebuilt again). With ``rebuild`` (``satpulse migrate``, every worker
    stopped): applies every pending migration."""
    db = ch.database
    if not _table_exists(ch, "schema_migrations"):  # on a cluster, DDL waits for every replica: only when needed
        _apply(ch, 0, ("CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, applied_at DateTime) "
                       "ENGINE = ReplacingMergeTree ORDER BY version",))
    done = {row[0] for row in ch.query(f"SELECT version FROM {db}.schema_migrations")}
    pending = [(version, steps) for version, steps in MIGRATIONS if version not in done]
    if not rebuild:
        blocked = [version for version, steps in pending if any(_copies_rows(ch, step) for step in steps)]
        if blocked:
            raise MigrationRequired(blocked)
    for version, steps in pending:
        _apply(ch, version, steps)
        ch.insert(f"{db}.schema_migrations", ("version", "applied_at"), [(version, int(time.time()))])
    for added in add_declared_columns(ch):
        log.info("added declared column %s", added)
    return [version for version, _ in pending]


def add_declared_columns(ch: ClickHouse, declared: Mapping[str, Sequence[Column]] = DECLARED_COLUMNS) -> list[str]:
    """Add each column of ``declared`` (table -> columns) its existing table lacks, with its declared type;
    returns them as ``table.column``. Safe while workers write and concurrently (:class:`AddColumn`); rows
    already stored read the type's default (0, ``[]``, NULL), which the decoders take as nothing counted."""
    added: list[str] = []
    for table, columns in declared.items():
        if not _table_exists(ch, data_table(ch, table)):
            continue  # a table not created yet gets its columns once it is
        new = _add_columns(ch, table, [AddColumn(table, c.name, c.type) for c in columns])
        if new:
            _sync_distributed(ch, table)
            added += [f"{table}.{step.column}" for step in new]
    return added


def describe(version: int) -> str:
    """What migration ``version`` does, in words: "create table t", "add column t.c", "rebuild t (...)"."""
    return "; ".join(_describe_step(step) for step in dict(MIGRATIONS)[version])


def _describe_step(step: str | AddColumn | Rekey) -> str:
    if isinstance(step, AddColumn):
        return f"add column {step.table}.{step.column}"
    if isinstance(step, Rekey):
        return f"rebuild {step.table} (the old table is kept as {step.table}_previous)"
    created = re.search(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)", step)
    return f"create table {created.group(1)}" if created else step.strip().splitlines()[0]


def _apply(ch: ClickHouse, version: int, steps: tuple[str | AddColumn | Rekey, ...]) -> None:
    """Run the steps of migration ``version``, then bring the Distributed tables of the tables they touched up
    to date (on a cluster: once per table, not once per step)."""
    touched: dict[str, None] = {}  # in order
    # consecutive columns added to one table go in one ALTER
    for _, group in groupby(steps, key=lambda step: step.table if isinstance(step, AddColumn) else id(step)):
        batch = list(group)
        step = batch[0]
        if isinstance(step, AddColumn):
            _add_columns(ch, step.table, [column for column in batch if isinstance(column, AddColumn)])
            touched[step.table] = None
        elif isinstance(step, Rekey):
            _rekey(ch, version, step)
            touched[step.table] = None
        else:
            touched[_create(ch, version, step)] = None
    for table in touched:
        _sync_distributed(ch, table)


# ------------------------------------------------------------------------------------------ one server or a cluster

_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS \{db\}\.(?P<table>\w+) (?P<columns>\(.*\)) ENGINE = (?P<engine>.*)",
                     re.S)
_ENGINE = re.compile(r"(?P<name>\w*MergeTree)(?:\((?P<args>[^)]*)\))?(?P<rest>.*)", re.S)


def data_table(ch: ClickHouse, table: str) -> str:
    """The table that holds the rows of ``table``: itself on one server, ``{table}_local`` on a cluster."""
    return table if ch.cluster is None else f"{table}_local"


def on_cluster(ch: ClickHouse) -> str:
    """`` ON CLUSTER name`` for DDL that every replica must run, on a cluster; empty on one server."""
    return "" if ch.cluster is None else f" ON CLUSTER {ch.cluster}"


def _replicated(ch: ClickHouse, version: int, table: str, engine: str) -> str:
    """``engine`` (``[Replacing|Aggregating|...]MergeTree[(args)] [PARTITION BY ...] ORDER BY ...``) for the rows
    of ``table`` created by migration ``version``: unchanged on one server, its Replicated* form on a cluster
    (a new ZooKeeper path per creating migration, so a rebuilt table never joins its predecessor's replicas)."""
    if ch.cluster is None:
        return engine
    parts = _ENGINE.fullmatch(engine.strip())
    if parts is None:
        raise ValueError(f"not a MergeTree engine: {engine!r}")
    path = f"/clickhouse/tables/{{shard}}/{ch.database}/{table}_v{version}"
    args = f", {parts['args']}" if parts["args"] else ""
    return f"Replicated{parts['name']}('{path}', '{{replica}}'{args}){parts['rest']}"


def _create(ch: ClickHouse, version: int, statement: str) -> str:
    """Run a ``CREATE TABLE IF NOT EXISTS {db}.t (...) ENGINE = ...`` step; returns t. As written on one server;
    on a cluster as ``t_local`` with the replicated engine on every replica (``t`` is left to
    :func:`_sync_distributed`). Raises ValueError for any other statement."""
    parts = _CREATE.fullmatch(statement.strip())
    if parts is None:
        raise ValueError(f"not a CREATE TABLE IF NOT EXISTS step: {statement[:80]!r}")
    table = parts["table"]
    if ch.cluster is None:
        ch.execute(statement.format(db=ch.database))
    elif not _table_exists(ch, data_table(ch, table)):
        ch.execute(f"CREATE TABLE IF NOT EXISTS {ch.database}.{data_table(ch, table)}{on_cluster(ch)} "
                   f"{parts['columns']} ENGINE = {_replicated(ch, version, table, parts['engine'])}")
    return table


def _sync_distributed(ch: ClickHouse, table: str) -> None:
    """On a cluster: make the Distributed table ``table`` match the columns and sorting key of ``table_local`` (as
    this replica has them; MATERIALIZED columns as ALIAS). A missing one is created; a different one is replaced by
    a new one swapped in with one RENAME on every replica, so that concurrent readers and writers always find the
    table. No-op when it matches (or on one server)."""
    if ch.cluster is None:
        return
    db, local = ch.database, data_table(ch, table)
    # a MATERIALIZED column becomes an ALIAS of the same expression: a Distributed table of 18.16 would compute
    # it and send it along, and the local table refuses values for it (code 44)
    columns_sql = ("SELECT name, type, if(default_kind = 'MATERIALIZED', 'ALIAS', default_kind), default_expression "
                   "FROM system.columns WHERE database = %(d)s AND table = %(t)s")
    columns = ch.query(columns_sql, {"d": db, "t": local})
    key = ch.query("SELECT sorting_key FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                   {"d": db, "t": local})[0][0]
    engine = f"Distributed({ch.cluster}, {db}, {local}, cityHash64({key}))"
    current = ch.query("SELECT engine_full FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                       {"d": db, "t": table})
    if current and current[0][0] == engine and ch.query(columns_sql, {"d": db, "t": table}) == columns:
        return
    definitions = ", ".join(f"{name} {type_} {kind} {expression}".rstrip()
                            for name, type_, kind, expression in columns)
    on = on_cluster(ch)

    def create(name: str) -> None:
        ch.execute(f"CREATE TABLE IF NOT EXISTS {db}.{name}{on} ({definitions}) ENGINE = {engine}")

    if not current:
        create(table)
        return
    if _table_exists(ch, f"{table}_refreshed"):  # left by an interrupted run
        ch.execute(f"DROP TABLE {db}.{table}_refreshed{on}")
    create(f"{table}_refreshed")
    ch.execute(f"RENAME TABLE {db}.{table} TO {db}.{table}_stale, {db}.{table}_refreshed TO {db}.{table}{on}")
    ch.execute(f"DROP TABLE {db}.{table}_stale{on}")


def _add_columns(ch: ClickHouse, table: str, steps: list[AddColumn]) -> list[AddColumn]:
    """Add the columns of ``steps`` that ``table`` lacks, in one ALTER (on a cluster each ALTER waits for every
    replica), and return them; a concurrent worker adding them first is not an error."""

    def missing() -> list[AddColumn]:
        rows = ch.query("SELECT name FROM system.columns WHERE database = %(d)s AND table = %(t)s",
                        {"d": ch.database, "t": data_table(ch, table)})
        present = {row[0] for row in rows}
        return [step for step in steps if step.column not in present]

    adding = missing()
    if not adding:
        return []
    try:
        ch.execute(f"ALTER TABLE {ch.database}.{data_table(ch, table)}{on_cluster(ch)} "
                   + ", ".join(f"ADD COLUMN {step.column} {step.type}" for step in adding))
    except ClickHouseError:
        if missing():
            raise
    return adding


def _table_exists(ch: ClickHouse, table: str) -> bool:
    rows = ch.query("SELECT count() FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                    {"d": ch.database, "t": table})
    return int(rows[0][0]) > 0


def _copies_rows(ch: ClickHouse, step: str | AddColumn | Rekey) -> bool:
    """Whether ``step`` is a rebuild that would copy rows now: its table holds data and is not rebuilt yet."""
    if not isinstance(step, Rekey) or _table_exists(ch, data_table(ch, f"{step.table}_previous")):
        return False
    return _table_exists(ch, step.table) and int(ch.query(f"SELECT count() FROM {ch.database}.{step.table}")[0][0]) > 0


def _rekey(ch: ClickHouse, version: int, step: Rekey) -> None:
    """On a cluster the copy goes through a Distributed table over the new local tables (rows re-sharded by the
    new sorting key) and the local tables are swapped on every replica; :func:`_apply` then rebuilds the
    Distributed table (its sharding key follows the sorting key)."""
    db, table, on = ch.database, step.table, on_cluster(ch)
    local, rekeyed, previous = (data_table(ch, name) for name in (table, f"{table}_rekeyed", f"{table}_previous"))
    if _table_exists(ch, previous):
        return
    ch.execute(f"DROP TABLE IF EXISTS {db}.{rekeyed}{on}")  # a copy left by an interrupted run
    ch.execute(f"CREATE TABLE {db}.{rekeyed}{on} AS {db}.{local} "
               f"ENGINE = {_replicated(ch, version, table, step.engine)}")
    _sync_distributed(ch, f"{table}_rekeyed")
    ch.execute(f"INSERT INTO {db}.{table}_rekeyed SELECT * FROM {db}.{table}")
    try:
        ch.execute(f"RENAME TABLE {db}.{local} TO {db}.{previous}, {db}.{rekeyed} TO {db}.{local}{on}")
    except ClickHouseError:
        if not _table_exists(ch, previous):  # not a concurrent worker that renamed first
            raise
    if ch.cluster is not None:
        ch.execute(f"DROP TABLE IF EXISTS {db}.{table}_rekeyed{on}")
