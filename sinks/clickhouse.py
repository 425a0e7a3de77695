"""One SQL, two ClickHouse engines, chosen by one URL setting.

- ``chdb:///abs/path`` — chDB, current ClickHouse in-process (the embedded default);
- ``clickhouse://user:password@host:port/database`` — a ClickHouse server over the native protocol
  (clickhouse-driver), e.g. the Debian 18.16 server or current ClickHouse in docker-compose;
  ``clickhouse://user:password@host1:port1,host2:port2/database`` names the replicas of a cluster: the client
  connects to the first that answers and, once its connection fails, to the next (docs/scaling.md).

Every statement is written once with ``%(name)s`` placeholders. The server backend lets clickhouse-driver
substitute them; the chDB backend substitutes them with clickhouse-driver's own escaping, so both engines
receive the same literal SQL. Values are never formatted into SQL by hand.
Inserted values: ``str`` goes to a String column as UTF-8, ``bytes`` as the bytes unchanged (raw payloads).
A backend is not thread-safe (clickhouse-driver's Client is not): use one per thread.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import orjson
from clickhouse_driver.util.escape import escape_param

from satpulse.settings import Settings

Params = Mapping[str, Any]


# server error codes (ClickHouse src/Common/ErrorCodes.cpp) that go away by themselves: the server, its network,
# its load or its replication is unwell, not the statement. Every other code means ClickHouse refuses the statement
# (syntax, unknown table or column, type, a value that does not fit its column, access) until someone changes it.
TRANSIENT_CODES: tuple[int, ...] = (
    3,  # UNEXPECTED_END_OF_FILE
    32,  # ATTEMPT_TO_READ_AFTER_EOF
    95,  # CANNOT_READ_FROM_SOCKET
    96,  # CANNOT_WRITE_TO_SOCKET
    159,  # TIMEOUT_EXCEEDED
    173,  # CANNOT_ALLOCATE_MEMORY
    198,  # DNS_ERROR
    201,  # QUOTA_EXPIRED (QUOTA_EXCEEDED: the quota interval ends)
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR (clickhouse-driver: connection refused, reset, closed)
    225,  # NO_ZOOKEEPER
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY (a replica lost its Keeper session)
    243,  # NOT_ENOUGH_SPACE
    244,  # UNEXPECTED_ZOOKEEPER_ERROR
    252,  # TOO_MANY_PARTS
    265,  # NO_AVAILABLE_REPLICA
    279,  # ALL_CONNECTION_TRIES_FAILED
    285,  # TOO_FEW_LIVE_REPLICAS
    286,  # UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
    319,  # UNKNOWN_STATUS_OF_INSERT
    394,  # QUERY_WAS_CANCELLED
    415,  # ALL_REPLICAS_LOST
    425,  # SYSTEM_ERROR
    439,  # CANNOT_SCHEDULE_TASK
    473,  # DEADLOCK_AVOIDED
    999,  # KEEPER_EXCEPTION
)
STATEMENT_CHARS = 500  # how much of a failing statement an error keeps
_CODE = re.compile(r"\bCode: (\d{1,9})\.")  # "Code: 62. DB::Exception: Syntax error ..." (chDB, server text)


class StoreNotReady(RuntimeError):
    """There is no connection to read through yet: the worker has not connected (start-up), or runs no stage
    that does."""


class ClickHouseError(RuntimeError):
    """A statement failed (connection refused, server error, bad SQL). The caller decides to retry.

    ``code`` is the ClickHouse error code when the server (or clickhouse-driver) gave one; ``statement`` is the
    start of the failing SQL as written, with ``%(name)s`` placeholders and without inserted data (values may be
    personal data), or None when no statement was running."""

    def __init__(self, message: str, code: int | None = None, statement: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.statement = statement[:STATEMENT_CHARS] if statement is not None else None

    @classmethod
    def wrap(cls, exc: BaseException, statement: str | None = None) -> ClickHouseError:
        """The ClickHouseError for an exception an engine raised while running ``statement``, with its code."""
        return cls(str(exc), error_code(exc), statement)

    @property
    def permanent(self) -> bool:
        """True when ClickHouse refuses the statement itself: retrying it unchanged fails the same way. An error
        without a code (network, socket, EOF) or with a code in TRANSIENT_CODES is not permanent."""
        return self.code is not None and self.code not in TRANSIENT_CODES


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of ``exc``: clickhouse-driver's ``code`` attribute (ServerException and its
    client-side errors), else the first "Code: N." in its text (chDB). None when there is none."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return code
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


class ClickHouse(Protocol):
    """What the sinks and queries need from an engine. Implementations are thread-safe (calls are serialised)."""

    database: str
    cluster: str | None  # the cluster whose Replicated* and Distributed tables migrations create; None: one server

    def execute(self, sql: str, params: Params | None = None) -> None:
        """Run a statement that returns nothing. Blocks; raises ClickHouseError."""

    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        """Run a SELECT and return its rows. Blocks; raises ClickHouseError."""

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows as one block (atomic for a table without partitioning). Blocks; raises ClickHouseError."""

    def close(self) -> None: ...


def _substitute(sql: str, params: Params | None) -> str:
    if not params:
        return sql
    return sql % {k: _literal(v) for k, v in params.items()}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, bytes):
        return _bytes_literal(value)
    return str(escape_param(value, None))


def _bytes_literal(value: bytes) -> str:
    """A quoted ClickHouse string literal holding exactly ``value``, written in printable ASCII (``\\xHH``)."""
    out = []
    for byte in value:
        if byte in (0x27, 0x5C):  # quote, backslash
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "'" + "".join(out) + "'"


class ChdbClickHouse:
    """chDB in-process, data under ``path``. chDB allows one data path per process at a time: opening a
    different path closes the session of the previous one (whose objects then fail with ClickHouseError)."""

    _active: tuple[str, Any] | None = None
    _lock = threading.Lock()

    def __init__(self, path: str, database: str = "satpulse") -> None:
        from chdb import session as chdb_session  # imported lazily: loading chDB costs ~200 MB

        self.database = database
        self.cluster: str | None = None
        with self._lock:
            active = ChdbClickHouse._active
            if active is None or active[0] != path:
                if active is not None:
                    active[1].close()
                active = (path, chdb_session.Session(path))  # type: ignore[no-untyped-call]
                ChdbClickHouse._active = active
            self._path: str = active[0]
            self._session: Any = active[1]
        self.execute(f"CREATE DATABASE IF NOT EXISTS {database}")

    def _run(self, sql: str, fmt: str, statement: str) -> Any:
        """Run ``sql`` (literal values included); a failure is a ClickHouseError naming ``statement``, the SQL
        without its values."""
        try:
            with self._lock:
                return self._session.query(sql, fmt)
        except Exception as exc:  # chDB raises RuntimeError/ChdbError with the server's message
            raise ClickHouseError.wrap(exc, statement) from exc

    def execute(self, sql: str, params: Params | None = None) -> None:
        self._run(_substitute(sql, params), "TabSeparated", sql)

    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        result = self._run(_substitute(sql, params), "JSONCompact", sql)
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        if not text.strip():
            return []
        return [tuple(row) for row in json.loads(text)["data"]]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        into = f"INSERT INTO {table} ({', '.join(columns)}) FORMAT"
        # JSON data, not SQL literals: the values never pass through the SQL parser. One dumps call for the
        # whole block gives "[row],[row],...", which JSONCompactEachRow reads (orjson: 15x json.dumps)
        try:
            data = orjson.dumps(rows if isinstance(rows, list) else list(rows))[1:-1].decode()
        except TypeError:  # bytes values (raw payloads), which JSON cannot carry: Values data, escaped literals
            values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
            self._run(f"{into} Values {values}", "TabSeparated", f"{into} Values")
            return
        self._run(f"{into} JSONCompactEachRow\n{data}", "TabSeparated", f"{into} JSONCompactEachRow")

    def close(self) -> None:
        """Close the process's chDB session (releases the data directory for other processes)."""
        with self._lock:
            if ChdbClickHouse._active is not None and ChdbClickHouse._active[0] == self._path:
                ChdbClickHouse._active[1].close()
                ChdbClickHouse._active = None


class ServerClickHouse:
    """A ClickHouse server over the native protocol (clickhouse-driver). Thread-safe: one call at a time on the
    connection (clickhouse-driver's Client is not).

    ``hosts``: (host, port) of the server, or of every replica of a cluster in the order to try them: a call
    whose connection fails raises ClickHouseError, and the next call connects to the first host that answers,
    starting with the one that failed. With a ``cluster`` (migrations then create Replicated* tables and
    Distributed tables over them), inserts into Distributed tables are synchronous and acknowledged once
    ``insert_quorum`` replicas of the shard hold the block (waiting at most ``QUORUM_TIMEOUT_MS`` for them, then
    failing with a transient error). Deduplication of identical blocks is off: a retried block would be ignored
    as a duplicate of one not yet on a quorum; the tables' replacing keys make the copy harmless."""

    QUORUM_TIMEOUT_MS = 10_000

    def __init__(self, hosts: Sequence[tuple[str, int]], user: str, password: str, database: str,
                 cluster: str | None = None, insert_quorum: int = 2) -> None:
        from clickhouse_driver import Client

        self.database = database
        self.cluster = cluster
        self._lock = threading.Lock()
        settings: dict[str, Any] = {"allow_experimental_low_cardinality_type": 1, "strings_as_bytes": False}
        if cluster is not None:
            settings.update(insert_distributed_sync=1, insert_quorum=insert_quorum,
                            insert_quorum_timeout=self.QUORUM_TIMEOUT_MS, insert_deduplicate=0)
        (host, port), *alternatives = hosts
        # an ON CLUSTER statement answers once every replica ran it, which the server bounds by its
        # distributed_ddl_task_timeout (180 s): wait longer than that on a cluster, so that the server's own
        # timeout error, not a dropped socket, reports a replica that does not answer
        self._client = Client(host=host, port=port, user=user, password=password, database="default",
                              alt_hosts=",".join(f"{h}:{p}" for h, p in alternatives) or None,
                              settings=settings, connect_timeout=5,
                              send_receive_timeout=60 if cluster is None else 200)
        on_cluster = f" ON CLUSTER {cluster}" if cluster is not None else ""
        if not self.query("SELECT count() FROM system.databases WHERE name = %(d)s", {"d": database})[0][0]:
            self.execute(f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster}")

    def execute(self, sql: str, params: Params | None = None) -> None:
        self.query(sql, params)

    def _execute(self, sql: str, params: Any, **kwargs: Any) -> Any:
        """One call on the connection at a time; a failed call drops the connection (reconnected on the next)."""
        with self._lock:
            try:
                return self._client.execute(sql, params, **kwargs)
            except Exception as exc:  # clickhouse_driver.errors.Error, socket errors, EOFError
                self._client.disconnect()
                raise ClickHouseError.wrap(exc, sql) from exc

    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        return list(self._execute(sql, dict(params) if params else None))

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        data = list(zip(*rows, strict=True))  # columnar: transposed once here, not converted row by row
        self._execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", data, columnar=True)

    def close(self) -> None:
        with self._lock:
            self._client.disconnect()


def connect_configured(settings: Settings, url: str | None = None) -> ClickHouse:
    """:func:`connect` to ``url`` (default: settings ``clickhouse_url``) with the settings' cluster and insert
    quorum. Raises as :func:`connect`."""
    return connect(url or settings.clickhouse_url.get_secret_value(), settings.clickhouse_cluster,
                   settings.clickhouse_insert_quorum)


def connect(url: str, cluster: str | None = None, insert_quorum: int = 2) -> ClickHouse:
    """Open the engine named by ``url`` (with ``cluster``, settings ``clickhouse_cluster`` and
    ``clickhouse_insert_quorum``: see :class:`ServerClickHouse`). Raises ValueError for an unknown scheme, a
    malformed host list or a cluster on chDB, ClickHouseError when the engine does not answer."""
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        if cluster is not None:
            raise ValueError("chDB is one process: clickhouse_cluster needs a clickhouse:// server URL")
        path = unquote(parsed.path) if not parsed.netloc else unquote(parsed.netloc + parsed.path)
        return ChdbClickHouse(path)
    if parsed.scheme == "clickhouse":
        database = parsed.path.lstrip("/") or "satpulse"
        credentials, _, host_list = parsed.netloc.rpartition("@")
        user, _, password = credentials.partition(":")
        try:
            return ServerClickHouse(_hosts(host_list), unquote(user or "default"), unquote(password), database,
                                    cluster, insert_quorum)
        except ClickHouseError:
            raise
        except Exception as exc:
            raise ClickHouseError.wrap(exc) from exc
    raise ValueError(f"unsupported ClickHouse URL scheme {parsed.scheme!r}: use chdb:///path or clickhouse://")


def _hosts(host_list: str) -> list[tuple[str, int]]:
    """(host, port) of each entry of ``host1[:port1],host2[:port2]`` (port 9000 when left out; IPv6 in
    brackets). Raises ValueError for a bad port."""
    hosts = []
    for entry in host_list.split(",") if host_list else ["127.0.0.1"]:
        address = urlparse(f"//{entry}")
        hosts.append((address.hostname or "127.0.0.1", address.port or 9000))
    return hosts
