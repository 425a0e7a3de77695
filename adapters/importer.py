"""Historical import: CSV / JSONL exports -> raw submissions, driven by a declarative YAML mapping.

``satpulse import FILE --mapping M.yaml [--dry-run]``. The mapping (docs/adapters.md#import-mappings) names the
columns of each field, how to read timestamps (strptime formats, day-first included, ``iso``, ``epoch``,
``epoch_ms``; date and time in separate columns; offsets added from duration columns), the time zone, value maps,
and the events one row produces, each with conditions ("only when column X is not empty") and checks ("not before
event Y"). Every event is validated with the cleaner's own rules (:func:`domain.clean.clean`, pure) before it is
published, so an import reports at once what the pipeline would refuse (and which raw channels it would count as
``other``, which rating scales it does not know); refused events go to the dead-letter topic with their reason
and origin ``path:record`` (stage ``import``), the rest to the ingest topic through the emit path
(adapters/emit.py: privacy policy, key of the clean event, encoding). Event ids are
``{source}:{row id}:{event}``: importing a file twice publishes the same ids, which the pipeline deduplicates.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from adapters.emit import Emitter, IngestEncoder, Send
from adapters.privacy import PrivacyPolicy
from domain.clean import Rejected, clean, normalise_channel
from satpulse import metrics, topics
from satpulse.deadletter import Origin

STAGE = "import"
SUBMISSION_FIELDS = ("ticket_id", "agent", "team", "category", "product", "customer_id", "channel", "priority",
                     "comment")
_UNITS = {"s": 1.0, "seconds": 1.0, "ms": 0.001, "min": 60.0, "minutes": 60.0, "h": 3600.0, "hours": 3600.0,
          "d": 86400.0, "days": 86400.0}


class MappingError(ValueError):
    """The mapping file is wrong (unknown key, missing column, bad format); raised before anything is read."""


class RowError(ValueError):
    """One event of one row cannot be built; ``reason`` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- the mapping --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldSpec:
    column: str | None = None
    value: str | None = None  # a constant
    map: dict[str, str] = field(default_factory=dict)  # value map, applied after stripping

    def get(self, row: Mapping[str, Any]) -> str | None:
        raw = self.value if self.column is None else _lookup(row, self.column)
        if raw is None:
            return None
        text = str(raw).strip()
        if not text:
            return None
        return self.map.get(text, text)


@dataclass(frozen=True)
class TimeSpec:
    columns: tuple[str, ...] = ()
    join: str = " "
    formats: tuple[str, ...] = ("iso",)
    timezone: str | None = None
    base: str | None = None  # another time of the row
    plus: tuple[tuple[str, str], ...] = ()  # (column, unit) durations added


@dataclass(frozen=True)
class Condition:
    column: str
    op: str  # not_empty, empty, equals, not_equals, in
    values: tuple[str, ...] = ()

    def holds(self, row: Mapping[str, Any]) -> bool:
        raw = _lookup(row, self.column)
        text = "" if raw is None else str(raw).strip()
        if self.op == "not_empty":
            return text != ""
        if self.op == "empty":
            return text == ""
        if self.op in ("equals", "in"):
            return text in self.values
        return text not in self.values  # not_equals


@dataclass(frozen=True)
class Check:
    not_before: str  # the event's time must not be before this time of the row (when that time is present)
    reason: str


@dataclass(frozen=True)
class EventSpec:
    name: str
    kind: str
    time: str
    status: str | None = None
    when: tuple[Condition, ...] = ()
    checks: tuple[Check, ...] = ()
    rating: FieldSpec | None = None
    scale: str | None = None
    fields: dict[str, FieldSpec] = field(default_factory=dict)  # overrides of the row's fields


@dataclass(frozen=True)
class ImportMapping:
    name: str
    source: str
    format: str | None
    delimiter: str
    encoding: str
    timezone: str
    row_id: FieldSpec | None
    fields: dict[str, FieldSpec]
    times: dict[str, TimeSpec]
    events: tuple[EventSpec, ...]

    def columns(self) -> set[str]:
        """Every top-level column the mapping reads (checked against the CSV header before reading)."""
        names: set[str] = set()
        specs = [*self.fields.values(), *(f for e in self.events for f in e.fields.values())]
        specs += [e.rating for e in self.events if e.rating is not None]
        if self.row_id is not None:
            specs.append(self.row_id)
        names.update(s.column for s in specs if s.column is not None)
        for t in self.times.values():
            names.update(t.columns)
            names.update(c for c, _ in t.plus)
        names.update(c.column for e in self.events for c in e.when)
        return {n.split(".")[0] for n in names}


def _lookup(row: Mapping[str, Any], column: str) -> Any:
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):  # dotted path into nested JSONL objects
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _field(spec: object, where: str) -> FieldSpec:
    if isinstance(spec, str):
        return FieldSpec(column=spec)
    if not isinstance(spec, dict):
        raise MappingError(f"{where}: expected a column name or {{column|value, map}}")
    unknown = set(spec) - {"column", "value", "map"}
    if unknown or ("column" in spec) == ("value" in spec):
        raise MappingError(f"{where}: needs exactly one of column/value (and optionally map); got {sorted(spec)}")
    value_map = spec.get("map") or {}
    if not isinstance(value_map, dict):
        raise MappingError(f"{where}.map must be a mapping")
    return FieldSpec(column=None if spec.get("column") is None else str(spec["column"]),
                     value=None if spec.get("value") is None else str(spec["value"]),
                     map={str(k): str(v) for k, v in value_map.items()})


def _condition(spec: object, where: str) -> Condition:
    if not isinstance(spec, dict) or "column" not in spec:
        raise MappingError(f"{where}: a condition is {{column: X, not_empty|empty: true | equals|not_equals: v | "
                           f"in: [...]}}")
    ops = [op for op in ("not_empty", "empty", "equals", "not_equals", "in") if op in spec]
    if len(ops) != 1 or set(spec) - {"column", *ops}:
        raise MappingError(f"{where}: exactly one operator expected, got {sorted(spec)}")
    op = ops[0]
    raw = spec[op]
    values = tuple(str(v) for v in raw) if op == "in" and isinstance(raw, list) else (str(raw),)
    return Condition(str(spec["column"]), op, values if op in ("equals", "not_equals", "in") else ())


def _zone(name: str, where: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise MappingError(f"{where}: unknown time zone {name!r}") from None
    return name


def load_mapping(path: Path) -> ImportMapping:
    """Read and check a mapping file. Raises MappingError naming the problem."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"cannot read mapping {path}: {exc}") from None
    return parse_mapping(doc, str(path))


def parse_mapping(doc: object, where: str = "mapping") -> ImportMapping:
    if not isinstance(doc, dict):
        raise MappingError(f"{where}: expected a mapping at the top level")
    allowed = {"name", "description", "source", "format", "delimiter", "encoding", "timezone", "row_id", "fields",
               "times", "events"}
    if set(doc) - allowed:
        raise MappingError(f"{where}: unknown keys {sorted(set(doc) - allowed)}")
    timezone = _zone(str(doc.get("timezone", "UTC")), f"{where}.timezone")
    times: dict[str, TimeSpec] = {}
    for name, spec in (doc.get("times") or {}).items():
        w = f"{where}.times.{name}"
        if not isinstance(spec, dict) or set(spec) - {"column", "columns", "join", "format", "formats", "timezone",
                                                      "base", "plus"}:
            raise MappingError(f"{w}: expected {{column(s), format(s), timezone, base, plus}}")
        columns = tuple(spec["columns"]) if "columns" in spec else ((spec["column"],) if "column" in spec else ())
        if bool(columns) == ("base" in spec):
            raise MappingError(f"{w}: needs either column(s) or base")
        formats = spec.get("formats") or ([spec["format"]] if "format" in spec else ["iso"])
        plus = []
        for item in spec.get("plus") or []:
            if not isinstance(item, dict) or "column" not in item or str(item.get("unit", "s")) not in (
                    *_UNITS, "hms"):
                raise MappingError(f"{w}.plus: items are {{column, unit: s|ms|min|h|d|hms}}")
            plus.append((str(item["column"]), str(item.get("unit", "s"))))
        times[str(name)] = TimeSpec(
            columns=tuple(str(c) for c in columns), join=str(spec.get("join", " ")),
            formats=tuple(str(f) for f in formats),
            timezone=_zone(str(spec["timezone"]), w) if "timezone" in spec else None,
            base=None if spec.get("base") is None else str(spec["base"]), plus=tuple(plus))
    for name, t in times.items():
        if t.base is not None and t.base not in times:
            raise MappingError(f"{where}.times.{name}.base: unknown time {t.base!r}")
    fields = {str(k): _field(v, f"{where}.fields.{k}") for k, v in (doc.get("fields") or {}).items()}
    for name in fields:
        if name not in SUBMISSION_FIELDS:
            raise MappingError(f"{where}.fields: {name!r} is not a submission field ({', '.join(SUBMISSION_FIELDS)})")
    if "channel" not in fields:
        raise MappingError(f"{where}.fields.channel is required (a column or a constant value)")
    events: list[EventSpec] = []
    for index, spec in enumerate(doc.get("events") or []):
        w = f"{where}.events[{index}]"
        if not isinstance(spec, dict):
            raise MappingError(f"{w}: expected a mapping")
        kind = str(spec.get("kind", "feedback"))
        if kind not in ("feedback", "ticket"):
            raise MappingError(f"{w}.kind must be feedback or ticket")
        if spec.get("time") not in times:
            raise MappingError(f"{w}.time must name one of times: {sorted(times)}")
        if kind == "ticket" and not spec.get("status"):
            raise MappingError(f"{w}: a ticket event needs a status")
        rating = spec.get("rating")
        if rating is not None and (not isinstance(rating, dict) or "scale" not in rating):
            raise MappingError(f"{w}.rating: expected {{column, scale, map}}")
        checks = []
        for check in spec.get("checks") or []:
            if not isinstance(check, dict) or check.get("not_before") not in times or "reason" not in check:
                raise MappingError(f"{w}.checks: items are {{not_before: <time>, reason: <code>}}")
            checks.append(Check(str(check["not_before"]), str(check["reason"])))
        events.append(EventSpec(
            name=str(spec.get("name") or spec.get("status") or kind), kind=kind, time=str(spec["time"]),
            status=None if spec.get("status") is None else str(spec["status"]),
            when=tuple(_condition(c, f"{w}.when") for c in spec.get("when") or []), checks=tuple(checks),
            rating=None if rating is None else _field({k: v for k, v in rating.items() if k != "scale"}, f"{w}.rating"),
            scale=None if rating is None else str(rating["scale"]),
            fields={str(k): _field(v, f"{w}.fields.{k}") for k, v in (spec.get("fields") or {}).items()}))
    if not events:
        raise MappingError(f"{where}.events: at least one event is required")
    names = [e.name for e in events]
    if len(set(names)) != len(names):
        raise MappingError(f"{where}.events: event names must be unique, got {names}")
    fmt = doc.get("format")
    if fmt not in (None, "csv", "jsonl"):
        raise MappingError(f"{where}.format must be csv or jsonl")
    return ImportMapping(
        name=str(doc.get("name", where)), source=str(doc.get("source") or doc.get("name") or "import"),
        format=fmt, delimiter=str(doc.get("delimiter", ",")), encoding=str(doc.get("encoding", "utf-8")),
        timezone=timezone, row_id=None if doc.get("row_id") is None else _field(doc["row_id"], f"{where}.row_id"),
        fields=fields, times=times, events=tuple(events))


# --- rows -> submissions ------------------------------------------------------------------------------------

def parse_duration(text: str, unit: str) -> float:
    """Seconds from ``text`` in ``unit`` (``hms`` reads H:MM:SS or MM:SS). Raises ValueError."""
    if unit == "hms":
        parts = [float(p) for p in text.split(":")]
        if not 2 <= len(parts) <= 3 or any(p < 0 for p in parts):
            raise ValueError(f"{text!r} is not H:MM:SS")
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + part
        return seconds
    return float(text) * _UNITS[unit]


def parse_time(text: str, formats: tuple[str, ...], zone: str) -> datetime:
    """An aware datetime from ``text``: the first format that reads it wins; naive results are in ``zone``."""
    errors = []
    for fmt in formats:
        try:
            if fmt == "iso":
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            elif fmt in ("epoch", "epoch_ms"):
                seconds = float(text) / (1000 if fmt == "epoch_ms" else 1)
                return datetime.fromtimestamp(seconds, ZoneInfo("UTC"))
            else:
                parsed = datetime.strptime(text, fmt)
        except (ValueError, OverflowError, OSError) as exc:
            errors.append(f"{fmt}: {exc}")
            continue
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=ZoneInfo(zone))
    raise ValueError(f"{text!r} matches none of {list(formats)} ({'; '.join(errors)})")


class _RowTimes:
    """Times of one row, computed on demand: None when the columns are empty, RowError when unreadable."""

    def __init__(self, mapping: ImportMapping, row: Mapping[str, Any]) -> None:
        self._mapping, self._row = mapping, row
        self._cache: dict[str, datetime | None] = {}

    def get(self, name: str) -> datetime | None:
        if name not in self._cache:
            self._cache[name] = self._compute(name, set())
        return self._cache[name]

    def _compute(self, name: str, seen: set[str]) -> datetime | None:
        if name in seen:
            raise RowError("bad_timestamp", f"time {name!r} refers to itself")
        spec = self._mapping.times[name]
        if spec.base is not None:
            base = self._compute(spec.base, seen | {name})
            if base is None:
                return None
        else:
            parts = [str(_lookup(self._row, c) or "").strip() for c in spec.columns]
            if not all(parts):
                return None
            text = spec.join.join(parts)
            try:
                base = parse_time(text, spec.formats, spec.timezone or self._mapping.timezone)
            except ValueError as exc:
                raise RowError("bad_timestamp", f"time {name!r}: {exc}") from None
        for column, unit in spec.plus:
            raw = str(_lookup(self._row, column) or "").strip()
            if not raw:
                return None
            try:
                base = base + timedelta(seconds=parse_duration(raw, unit))
            except (ValueError, OverflowError) as exc:
                raise RowError("bad_timestamp", f"time {name!r}: duration {column}={raw!r}: {exc}") from None
        return base


@dataclass
class RowResult:
    """What one row produced: submissions to publish, rejected events, and the rating scales refused as
    unknown_scale."""

    submissions: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (event, reason, detail)
    unknown_scales: list[str] = field(default_factory=list)


def map_row(mapping: ImportMapping, row: Mapping[str, Any], number: int, now_ms: int,
            future_tolerance_ms: int = 300_000) -> RowResult:
    """The submissions of one row and its rejected events. Pure."""
    result = RowResult()
    times = _RowTimes(mapping, row)
    row_id = (mapping.row_id.get(row) if mapping.row_id is not None else None) or str(number)
    base = {name: spec.get(row) for name, spec in mapping.fields.items()}
    for event in mapping.events:
        if not all(c.holds(row) for c in event.when):
            continue
        try:
            when = times.get(event.time)
            if when is None:
                raise RowError("missing_field", f"time {event.time!r} is empty")
            for check in event.checks:
                other = times.get(check.not_before)
                if other is not None and when < other:
                    raise RowError(check.reason, f"{event.name} at {when.isoformat()} is before "
                                                 f"{check.not_before} at {other.isoformat()}")
        except RowError as exc:
            result.rejected.append((event.name, exc.reason, exc.detail))
            continue
        values = dict(base)
        values.update({name: spec.get(row) for name, spec in event.fields.items()})
        submission: dict[str, Any] = {"kind": event.kind, "event_id": f"{mapping.source}:{row_id}:{event.name}",
                                      "source": mapping.source, "event_time": when.isoformat()}
        submission.update({k: v for k, v in values.items() if v is not None})
        if event.status is not None:
            submission["status"] = event.status
        if event.rating is not None:
            value = event.rating.get(row)
            if value is not None:
                submission.update(rating_value=value, rating_scale=event.scale)
        try:
            clean(submission, now_ms, future_tolerance_ms)
        except Rejected as exc:
            result.rejected.append((event.name, exc.reason, exc.detail))
            if exc.reason == "unknown_scale":
                result.unknown_scales.append(str(submission.get("rating_scale")))
            continue
        result.submissions.append(submission)
    return result


# --- reading files ------------------------------------------------------------------------------------------

class _Counting(io.RawIOBase):
    """Counts the bytes read from a binary file (for the progress bar)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


def _records(path: Path, mapping: ImportMapping, counter: _Counting
             ) -> Iterator[tuple[int, dict[str, Any] | None, bytes, str | None]]:
    """(record number, row or None, original bytes, error) for each record of the file."""
    text = io.TextIOWrapper(io.BufferedReader(counter), encoding=mapping.encoding, newline="")
    fmt = mapping.format or ("jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv")
    if fmt == "jsonl":
        number = 0
        for line in text:
            if not line.strip():
                continue
            number += 1
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as exc:
                yield number, None, line.encode(), f"not a JSON object: {exc}"
                continue
            yield number, obj, line.rstrip("\r\n").encode(), None
        return
    reader = csv.reader(text, delimiter=mapping.delimiter)
    header = next(reader, None)
    if header is None:
        raise MappingError(f"{path} is empty: no CSV header")
    missing = sorted(mapping.columns() - set(header))
    if missing:
        raise MappingError(f"{path}: columns {missing} named in the mapping are not in the header {header}")
    for number, record in enumerate(reader, start=1):
        original = json.dumps(record, ensure_ascii=False).encode()
        if len(record) != len(header):
            yield number, None, original, f"record has {len(record)} fields, the header {len(header)}"
            continue
        yield number, dict(zip(header, record, strict=True)), json.dumps(
            dict(zip(header, record, strict=True)), ensure_ascii=False).encode(), None


# --- the import ---------------------------------------------------------------------------------------------

@dataclass
class ImportReport:
    rows: int = 0
    rows_published: int = 0  # every event of the row published
    rows_partial: int = 0  # some events published, some rejected
    rows_rejected: int = 0  # events applied but none published
    rows_without_events: int = 0  # no event's condition held (e.g. open tickets without any timestamp)
    events: Counter[str] = field(default_factory=Counter)  # published, by kind:status
    rejected_events: Counter[str] = field(default_factory=Counter)  # by reason
    rejected_rows: Counter[str] = field(default_factory=Counter)  # rows with at least one rejection, by reason
    channels: Counter[tuple[str, str]] = field(default_factory=Counter)  # published, by (raw, normalised) channel
    unknown_scales: Counter[str] = field(default_factory=Counter)  # events refused as unknown_scale, by scale

    def count_row(self, published: int, rejected: list[str], unknown_scales: list[str]) -> None:
        """Count one row that published ``published`` events and had events rejected for ``rejected`` (reasons,
        one per event), in the report and in ``satpulse_import_rows_total{outcome}``."""
        self.rejected_events.update(rejected)
        self.rejected_rows.update(set(rejected))
        self.unknown_scales.update(unknown_scales)
        if not published and not rejected:
            outcome = "no_event"
            self.rows_without_events += 1
        elif not published:
            outcome = "rejected"
            self.rows_rejected += 1
        elif rejected:
            outcome = "partial"
            self.rows_partial += 1
        else:
            outcome = "published"
            self.rows_published += 1
        metrics.IMPORT_ROWS.labels(outcome).inc()

    @property
    def published(self) -> int:
        return sum(self.events.values())

    def channels_to_other(self) -> Counter[str]:
        """Published events by raw channel that the pipeline counts as ``other`` (a value the mapping's channel
        map does not cover, e.g. "Inbound"); a raw "other" is not listed."""
        return Counter({raw: n for (raw, normalised), n in self.channels.items()
                        if normalised == "other" and raw.strip().lower() != "other"})

    def summary(self) -> str:
        """The counts as text: rows, events by kind, rejections by reason, raw channels that became ``other``
        and scales refused as unknown, each with its number of events. Pure."""
        return (f"rows read {self.rows}: fully published {self.rows_published}, partly {self.rows_partial}, "
                f"rejected {self.rows_rejected}, without events {self.rows_without_events}\n"
                f"events published {self.published} ({_counts(self.events)})\n"
                f"rows rejected by reason: {_counts(self.rejected_rows)}\n"
                f"events rejected by reason: {_counts(self.rejected_events)}\n"
                f"channels counted as other: {_counts(self.channels_to_other())}\n"
                f"unknown rating scales: {_counts(self.unknown_scales)}")

    def normalised_channels(self) -> str:
        """One line per raw channel of the published events: ``channel: Inbound -> other (3 events)``. Pure."""
        return "".join(f"channel: {raw} -> {normalised} ({n} events)\n"
                       for (raw, normalised), n in sorted(self.channels.items()))


def _counts(counter: Counter[str]) -> str:
    """``a 3, b 1`` in key order, ``none`` when empty."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


class Progress:
    """A one-line progress bar on stderr, redrawn at most every 0.2 s."""

    def __init__(self, total_bytes: int, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self._total = max(total_bytes, 1)
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._last = 0.0

    def update(self, done_bytes: int, rows: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self._enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        fraction = min(done_bytes / self._total, 1.0)
        bar = "#" * int(fraction * 30)
        self._stream.write(f"\rimport [{bar:<30}] {fraction:6.1%} {rows} rows")
        self._stream.flush()

    def close(self, rows: int) -> None:
        if self._enabled:
            self.update(self._total, rows, force=True)
            self._stream.write("\n")
            self._stream.flush()


def run_import(path: Path, mapping: ImportMapping, send: Send, privacy: PrivacyPolicy | None = None,
               now_ms: int | None = None, future_tolerance_ms: int = 300_000,
               progress: Progress | None = None, ingest_topic: str | None = None,
               dead_letter_topic: str | None = None) -> ImportReport:
    """Map every record of ``path`` and hand each message to ``send(topic, key, value)`` through the emit path
    (adapters/emit.py): submissions to the ingest topic, rejected events and unreadable records to the dead-letter
    topic. Raises MappingError before sending anything when the mapping does not fit the file; what ``send``
    raises passes through."""
    report = ImportReport()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    emitter = Emitter(STAGE, send, IngestEncoder(privacy or PrivacyPolicy(), ingest_topic or topics.INGEST),
                      dead_letter_topic or topics.DEAD_LETTER, now_ms=lambda: now_ms)
    with path.open("rb") as raw:
        counter = _Counting(raw)
        for number, row, original, error in _records(path, mapping, counter):
            report.rows += 1
            emitter.received()
            origin = Origin(ref=f"{path}:{number}")
            if row is None:
                result = RowResult(rejected=[("row", "unparseable_payload", error or "unreadable record")])
            else:
                result = map_row(mapping, row, number, now_ms, future_tolerance_ms)
            for event_name, reason, detail in result.rejected:
                emitter.dead_letter(reason, f"record {number}, event {event_name}: {detail}", original, origin)
            rejected = [reason for _, reason, _ in result.rejected]
            published = 0
            for submission in result.submissions:
                refused = emitter.submission(submission, origin, original)  # dead-lettered by the emitter if so
                if refused is not None:
                    rejected.append(refused)
                    continue
                published += 1
                report.events[f"{submission['kind']}:{submission.get('status', 'rating')}"] += 1
                report.channels[(submission["channel"], normalise_channel(submission["channel"]))] += 1
            report.count_row(published, rejected, result.unknown_scales)
            if progress is not None:
                progress.update(counter.count, report.rows)
    if progress is not None:
        progress.close(report.rows)
    return report
