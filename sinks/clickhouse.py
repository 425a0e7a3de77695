"""One SQL, two ClickHouse engines, chosen by one URL setting.

- ``chdb:///abs/path`` — chDB, current ClickHouse in-process (the embedded default);
- ``clickhouse://user:password@host:port/database`` — a ClickHouse server over the native protocol
  (clickhouse-driver), e.g. the Debian 18.16 server or current ClickHouse in docker-compose.

Every statement is written once with ``%(name)s`` placeholders. The server backend lets clickhouse-driver
substitute them; the chDB backend substitutes them with clickhouse-driver's own escaping, so both engines
receive the same literal SQL. Values are never formatted into SQL by hand.
Inserted values: ``str`` goes to a String column as UTF-8, ``bytes`` as the bytes unchanged (raw payloads).
A backend is not thread-safe (clickhouse-driver's Client is not): use one per thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import orjson
from clickhouse_driver.util.escape import escape_param

Params = Mapping[str, Any]


class ClickHouseError(RuntimeError):
    """A statement failed (connection refused, server error, bad SQL). The caller decides to retry."""


class ClickHouse(Protocol):
    """What the sinks and queries need from an engine. Implementations are thread-safe (calls are serialised)."""

    database: str

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

    def _run(self, sql: str, fmt: str) -> Any:
        try:
            with self._lock:
                return self._session.query(sql, fmt)
        except Exception as exc:  # chDB raises RuntimeError/ChdbError with the server's message
            raise ClickHouseError(str(exc)) from exc

    def execute(self, sql: str, params: Params | None = None) -> None:
        self._run(_substitute(sql, params), "TabSeparated")

    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        result = self._run(_substitute(sql, params), "JSONCompact")
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        if not text.strip():
            return []
        return [tuple(row) for row in json.loads(text)["data"]]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        # JSON data, not SQL literals: the values never pass through the SQL parser. One dumps call for the
        # whole block gives "[row],[row],...", which JSONCompactEachRow reads (orjson: 15x json.dumps)
        try:
            data = orjson.dumps(rows if isinstance(rows, list) else list(rows))[1:-1].decode()
        except TypeError:  # bytes values (raw payloads), which JSON cannot carry: Values data, escaped literals
            values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
            self._run(f"INSERT INTO {table} ({', '.join(columns)}) FORMAT Values {values}", "TabSeparated")
            return
        self._run(f"INSERT INTO {table} ({', '.join(columns)}) FORMAT JSONCompactEachRow\n{data}", "TabSeparated")

    def close(self) -> None:
        """Close the process's chDB session (releases the data directory for other processes)."""
        with self._lock:
            if ChdbClickHouse._active is not None and ChdbClickHouse._active[0] == self._path:
                ChdbClickHouse._active[1].close()
                ChdbClickHouse._active = None


class ServerClickHouse:
    """A ClickHouse server over the native protocol (clickhouse-driver). Thread-safe: one call at a time on the
    connection (clickhouse-driver's Client is not)."""

    def __init__(self, host: str, port: int, user: str, password: str, database: str) -> None:
        from clickhouse_driver import Client

        self.database = database
        self._lock = threading.Lock()
        settings = {"allow_experimental_low_cardinality_type": 1, "strings_as_bytes": False}
        self._client = Client(host=host, port=port, user=user, password=password, database="default",
                              settings=settings, connect_timeout=5, send_receive_timeout=60)
        self.execute(f"CREATE DATABASE IF NOT EXISTS {database}")

    def execute(self, sql: str, params: Params | None = None) -> None:
        self.query(sql, params)

    def _execute(self, sql: str, params: Any, **kwargs: Any) -> Any:
        """One call on the connection at a time; a failed call drops the connection (reconnected on the next)."""
        with self._lock:
            try:
                return self._client.execute(sql, params, **kwargs)
            except Exception as exc:  # clickhouse_driver.errors.Error, socket errors, EOFError
                self._client.disconnect()
                raise ClickHouseError(str(exc)) from exc

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


def connect(url: str) -> ClickHouse:
    """Open the engine named by ``url``. Raises ValueError for an unknown scheme, ClickHouseError when
    the engine does not answer."""
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        path = unquote(parsed.path) if not parsed.netloc else unquote(parsed.netloc + parsed.path)
        return ChdbClickHouse(path)
    if parsed.scheme == "clickhouse":
        database = parsed.path.lstrip("/") or "satpulse"
        try:
            return ServerClickHouse(parsed.hostname or "127.0.0.1", parsed.port or 9000,
                                    unquote(parsed.username or "default"), unquote(parsed.password or ""),
                                    database)
        except ClickHouseError:
            raise
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
    raise ValueError(f"unsupported ClickHouse URL scheme {parsed.scheme!r}: use chdb:///path or clickhouse://")
