"""Reading stored dead letters and recording their replays, for ``satpulse dead-letters`` (docs/dead-letters.md).

Dead letters are the rows of ``dead_letters`` (migrations 2 and 6, read with FINAL: one row per origin, stage
and reason); replays are the rows of ``dead_letter_replays`` (migration 7: one row per origin, the latest replay
wins). An origin is written as the dead-letter topic keys it (:meth:`satpulse.deadletter.Origin.key`):
``topic/partition/offset`` for a Kafka position, else its reference (``path:line``, ``path:record``). The
source of an origin is its topic, or its reference without the trailing ``:number`` (the file).

Every function blocks on ClickHouse and raises ClickHouseError; values reach SQL only as ``%(name)s`` params.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sinks.clickhouse import ClickHouse
from sinks.report import aligned

# the source of an origin: its topic, else its reference without the trailing :number
SOURCE_SQL = "if(origin_topic != '', origin_topic, replaceRegexpOne(origin_ref, ':[0-9]+$', ''))"
_ORIGIN_COLUMNS = ("origin_topic", "origin_partition", "origin_offset", "origin_ref")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One stored dead letter and when its origin was last replayed."""

    origin_topic: str  # '' for origins without a Kafka position
    origin_partition: int  # -1 without a Kafka position
    origin_offset: int  # -1 without a Kafka position
    origin_ref: str  # '' for Kafka positions
    stage: str
    reason: str
    detail: str
    payload: bytes  # at most dead_letter_payload_max_bytes of the original
    payload_size: int  # bytes of the whole original
    payload_sha256: str  # hex SHA-256 of the whole original
    failed_at_ms: int
    replayed_at: int | None  # epoch seconds of the origin's latest replay; None: never replayed

    @property
    def origin(self) -> str:
        """``topic/partition/offset`` or the reference, as the dead-letter topic keys it."""
        if self.origin_topic:
            return f"{self.origin_topic}/{self.origin_partition}/{self.origin_offset}"
        return self.origin_ref

    @property
    def origin_key(self) -> tuple[str, int, int, str]:
        return self.origin_topic, self.origin_partition, self.origin_offset, self.origin_ref

    @property
    def truncated(self) -> bool:
        """Only the first part of the payload was kept: it cannot be replayed."""
        return self.payload_size > len(self.payload)


@dataclass(frozen=True, slots=True)
class ReasonCount:
    stage: str
    reason: str
    count: int
    truncated: int  # payloads kept only in part
    replayed: int  # origins replayed at least once


@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    by_reason: list[ReasonCount]  # most frequent first
    by_source: list[tuple[str, int]]  # (origin source, count), most frequent first


def summary(ch: ClickHouse, since_s: int = 0) -> Summary:
    """Counts of the dead letters that failed at or after ``since_s`` (epoch seconds), by stage and reason and
    by origin source."""
    db, params = ch.database, {"since": since_s}
    replayed = (f"({', '.join(_ORIGIN_COLUMNS)}) IN (SELECT {', '.join(_ORIGIN_COLUMNS)} "
                f"FROM {db}.dead_letter_replays)")
    by_reason = ch.query(
        f"SELECT stage, reason, count() AS n, countIf(payload_size > length(payload)), countIf({replayed}) "
        f"FROM {db}.dead_letters FINAL WHERE toUInt32(failed_at) >= %(since)s "
        "GROUP BY stage, reason ORDER BY n DESC, stage, reason", params)
    by_source = ch.query(
        f"SELECT {SOURCE_SQL} AS source, count() AS n FROM {db}.dead_letters FINAL "
        "WHERE toUInt32(failed_at) >= %(since)s GROUP BY source ORDER BY n DESC, source", params)
    reasons = [ReasonCount(str(s), str(r), int(n), int(t), int(p)) for s, r, n, t, p in by_reason]
    return Summary(sum(r.count for r in reasons), reasons, [(str(s), int(n)) for s, n in by_source])


def find(ch: ClickHouse, origins: Sequence[str] = (), exact: bool = True, reason: str | None = None,
         stage: str | None = None, since_s: int = 0) -> list[DeadLetter]:
    """The dead letters that match every filter given, ordered by origin, stage and reason. ``origins``: any of
    them (``topic/partition/offset`` or a reference; with ``exact`` False also a source: a topic or a file,
    every origin in it). ``since_s``: failed at or after (epoch seconds)."""
    db, keys = ch.database, ", ".join(_ORIGIN_COLUMNS)
    where = ["toUInt32(failed_at) >= %(since)s"]
    params: dict[str, Any] = {"since": since_s}
    if reason is not None:
        where.append("reason = %(reason)s")
        params["reason"] = reason
    if stage is not None:
        where.append("stage = %(stage)s")
        params["stage"] = stage
    if origins:
        where.append("(" + " OR ".join(_origin_condition(o, i, exact, params) for i, o in enumerate(origins)) + ")")
    rows = ch.query(
        f"SELECT {keys}, stage, reason, detail, hex(payload), payload_size, payload_sha256, failed_at_ms, "
        "toUInt32(last_replay) "
        f"FROM (SELECT * FROM {db}.dead_letters FINAL WHERE {' AND '.join(where)}) AS letters "
        f"ALL LEFT JOIN (SELECT {keys}, max(replayed_at) AS last_replay FROM {db}.dead_letter_replays "
        f"GROUP BY {keys}) AS replays USING ({keys}) ORDER BY {keys}, stage, reason", params)
    return [_dead_letter(row) for row in rows]


def parse_position(origin: str) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of ``topic/partition/offset`` (a topic name has no ``/``), else None."""
    parts = origin.rsplit("/", 2)
    if len(parts) == 3 and parts[0] and "/" not in parts[0] and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return None


def _origin_condition(origin: str, index: int, exact: bool, params: dict[str, Any]) -> str:
    """SQL matching ``origin``; its params go into ``params`` under names numbered ``index``."""
    params[f"o{index}"] = origin
    conditions = [f"origin_ref = %(o{index})s"]
    position = parse_position(origin)
    if position is not None:
        params.update({f"t{index}": position[0], f"p{index}": position[1], f"f{index}": position[2]})
        conditions.append(f"(origin_topic = %(t{index})s AND origin_partition = %(p{index})s "
                          f"AND origin_offset = %(f{index})s)")
    if not exact:
        conditions.append(f"{SOURCE_SQL} = %(o{index})s")
    return "(" + " OR ".join(conditions) + ")"


def _dead_letter(row: Sequence[Any]) -> DeadLetter:
    payload = bytes.fromhex(row[7])
    size = int(row[8])
    return DeadLetter(
        str(row[0]), int(row[1]), int(row[2]), str(row[3]), str(row[4]), str(row[5]), str(row[6]), payload,
        # rows stored before migration 6 kept the whole payload and no size or hash
        size if size or row[9] else len(payload), str(row[9]) or hashlib.sha256(payload).hexdigest(),
        int(row[10]), int(row[11]) or None)


def record_replays(ch: ClickHouse, letters: Iterable[DeadLetter], ingest_topic: str,
                   now_s: int | None = None) -> int:
    """Record that the origins of ``letters`` were replayed to ``ingest_topic`` now; returns how many rows.
    Call it after the broker acknowledged the replayed messages. Idempotent per origin (the latest wins)."""
    at = int(time.time()) if now_s is None else now_s
    rows = [(*letter.origin_key, letter.payload_sha256, ingest_topic, at) for letter in letters]
    ch.insert(f"{ch.database}.dead_letter_replays", (*_ORIGIN_COLUMNS, "payload_sha256", "ingest_topic",
                                                     "replayed_at"), rows)
    return len(rows)


def format_summary(s: Summary, since_s: int = 0) -> str:
    """``s`` as text: the total, a table by stage and reason, a table by origin source. Pure."""
    since = f" since {_iso(since_s)}" if since_s else ""
    if not s.total:
        return f"dead letters{since}: 0\n"
    by_reason = [["stage", "reason", "count", "truncated", "replayed"],
                 *([r.stage, r.reason, str(r.count), str(r.truncated), str(r.replayed)] for r in s.by_reason)]
    by_source = [["origin", "count"], *([source, str(n)] for source, n in s.by_source)]
    return f"dead letters{since}: {s.total}\n\n{aligned(by_reason)}\n{aligned(by_source)}"


def format_letter(letter: DeadLetter) -> str:
    """One dead letter as text: its fields, then the payload (as text when it is UTF-8, else in hex). Pure."""
    kept = (f"{len(letter.payload)} of {letter.payload_size} bytes kept (truncated: cannot be replayed)"
            if letter.truncated else f"{letter.payload_size} bytes")
    replayed = "never" if letter.replayed_at is None else _iso(letter.replayed_at)
    try:
        payload = "payload:\n" + letter.payload.decode("utf-8")
    except UnicodeDecodeError:
        payload = "payload (hex):\n" + letter.payload.hex()
    fields = [("origin", letter.origin), ("stage", letter.stage), ("reason", letter.reason),
              ("detail", letter.detail), ("failed_at", _iso(letter.failed_at_ms / 1000)), ("size", kept),
              ("sha256", letter.payload_sha256), ("replayed", replayed)]
    return "".join(f"{name:<10} {value}\n" for name, value in fields) + payload + "\n"


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()
