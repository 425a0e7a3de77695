"""Historical import: CSV / JSONL exports -> raw submissions, driven by a declarative YAML mapping.

``satpulse import FILE --mapping M.yaml [--dry-run]``. The mapping (adapters/mapping.py,
docs/adapters.md#import-mappings) names the columns of each field, how to read timestamps (strptime formats,
day-first included, ``iso``, ``epoch``, ``epoch_ms``; date and time in separate columns; offsets added from
duration columns), the time zone, value maps, and the events one row produces, each with conditions ("only when
column X is not empty") and checks ("not before event Y"). Every event is validated with the cleaner's own rules
(:func:`domain.clean.clean`, pure) before it is published, so an import reports at once what the pipeline would
refuse (and which raw channels it would count as ``other``, which rating scales it does not know); refused
events go to the dead-letter topic with their reason and origin ``path:record`` (stage ``import``), the rest to
the ingest topic through the emit path (adapters/emit.py: privacy policy, key of the clean event, encoding).
Event ids are ``{source}:{row id}:{event}``: importing a file twice publishes the same ids, which the pipeline
deduplicates.
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
from zoneinfo import ZoneInfo

from adapters.emit import Emitter, IngestEncoder, Send
from adapters.mapping import DURATION_UNITS, ImportMapping, MappingError, lookup
from adapters.privacy import PrivacyPolicy
from domain.clean import Rejected, clean, normalise_channel
from satpulse import metrics, topics
from satpulse.deadletter import Origin

STAGE = "import"


class RowError(ValueError):
    """One event of one row cannot be built; ``reason`` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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
    return float(text) * DURATION_UNITS[unit]


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
            parts = [str(lookup(self._row, c) or "").strip() for c in spec.columns]
            if not all(parts):
                return None
            text = spec.join.join(parts)
            try:
                base = parse_time(text, spec.formats, spec.timezone or self._mapping.timezone)
            except ValueError as exc:
                raise RowError("bad_timestamp", f"time {name!r}: {exc}") from None
        for duration in spec.plus:
            raw = str(lookup(self._row, duration.column) or "").strip()
            if not raw:
                return None
            try:
                base = base + timedelta(seconds=parse_duration(raw, duration.unit))
            except (ValueError, OverflowError) as exc:
                raise RowError("bad_timestamp",
                               f"time {name!r}: duration {duration.column}={raw!r}: {exc}") from None
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
                submission.update(rating_value=value, rating_scale=event.rating.scale)
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
