"""Import mapping files (mappings/*.yaml, docs/adapters.md#import-mappings) as pydantic models: the schema, the
checks that span fields, and the error messages. Pure, but :func:`load_mapping` reads the file.

Every model forbids keys it does not know (``extra="forbid"``; the message lists the keys it expects). Shorthands
are accepted where the docs show them: a field or ``row_id`` may be a bare column name, a time may name one
``column`` and one ``format`` instead of lists. A file that does not fit raises :class:`MappingError`, one line
per problem: ``FILE: field path: what was expected``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SUBMISSION_FIELDS = ("ticket_id", "agent", "team", "category", "product", "customer_id", "channel", "priority",
                     "comment")
DURATION_UNITS: dict[str, float] = {"s": 1.0, "seconds": 1.0, "ms": 0.001, "min": 60.0, "minutes": 60.0,
                                    "h": 3600.0, "hours": 3600.0, "d": 86400.0, "days": 86400.0}


class MappingError(ValueError):
    """The mapping file is wrong (unknown key, missing column, bad format); raised before anything is read."""


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]


def lookup(row: Mapping[str, Any], column: str) -> Any:
    """The value of ``column`` in ``row``; a dotted path reaches into nested JSONL objects. None when absent."""
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class _MappingModel(BaseModel):
    """Frozen, unknown keys refused with the list of the keys expected (``shorthands``: other keys a model's
    own before-validator rewrites)."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
    shorthands: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _only_known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            expected = {field.alias or name for name, field in cls.model_fields.items()} | cls.shorthands
            unknown = sorted(str(key) for key in set(data) - expected)
            if unknown:
                raise ValueError(f"unknown keys {unknown}; expected some of {sorted(expected)}")
        return data


class FieldSpec(_MappingModel):
    """A value of the row: ``column`` (a bare string is a column name) or the constant ``value``, then ``map``
    applied to the stripped text."""

    column: str | None = None
    value: str | None = None
    map: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _column_name(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        if (self.column is None) == (self.value is None):
            raise ValueError("needs exactly one of column or value (and optionally map)")
        return self

    def get(self, row: Mapping[str, Any]) -> str | None:
        """The stripped, mapped text; None when absent or empty."""
        raw = self.value if self.column is None else lookup(row, self.column)
        if raw is None:
            return None
        text = str(raw).strip()
        if not text:
            return None
        return self.map.get(text, text)


class RatingSpec(FieldSpec):
    """The rating of a feedback event, with its scale (docs/metrics.md)."""

    scale: str


class Duration(_MappingModel):
    column: str
    unit: Literal["s", "seconds", "ms", "min", "minutes", "h", "hours", "d", "days", "hms"] = "s"


class TimeSpec(_MappingModel):
    """A time of the row: read from ``columns`` (joined with ``join``) with the first of ``formats`` that reads
    it (strptime, ``iso``, ``epoch``, ``epoch_ms``), or another time of the row (``base``); then ``plus``
    durations added. ``column``/``format`` are the one-item forms."""

    shorthands: ClassVar[frozenset[str]] = frozenset({"column", "format"})
    columns: tuple[str, ...] = ()
    join: str = " "
    formats: tuple[str, ...] = ("iso",)
    timezone: TimeZoneName | None = None
    base: str | None = None
    plus: tuple[Duration, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _one_item_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for one, many in (("column", "columns"), ("format", "formats")):
            if one in data:
                if many in data:
                    raise ValueError(f"give {one} or {many}, not both")
                data[many] = [data.pop(one)]
        return data

    @model_validator(mode="after")
    def _columns_or_base(self) -> TimeSpec:
        if bool(self.columns) == (self.base is not None):
            raise ValueError("needs either column(s) or base")
        return self


class Condition(_MappingModel):
    """``column`` and exactly one operator: ``not_empty: true``, ``empty: true``, ``equals``, ``not_equals``,
    ``in: [...]``."""

    column: str
    not_empty: Literal[True] | None = None
    empty: Literal[True] | None = None
    equals: str | None = None
    not_equals: str | None = None
    in_: tuple[str, ...] | None = Field(default=None, alias="in")

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        operators = [self.not_empty, self.empty, self.equals, self.not_equals, self.in_]
        if sum(operator is not None for operator in operators) != 1:
            raise ValueError("exactly one operator expected: not_empty, empty, equals, not_equals or in")
        return self

    def holds(self, row: Mapping[str, Any]) -> bool:
        raw = lookup(row, self.column)
        text = "" if raw is None else str(raw).strip()
        if self.not_empty:
            return text != ""
        if self.empty:
            return text == ""
        if self.equals is not None:
            return text == self.equals
        if self.in_ is not None:
            return text in self.in_
        return text != self.not_equals


class Check(_MappingModel):
    """The event's time must not be before the time ``not_before`` of the row (when that is present); otherwise
    the event is dead-lettered with ``reason``."""

    not_before: str
    reason: str


class EventSpec(_MappingModel):
    """One event a row produces (``name``: default the status, else the kind)."""

    name: str
    kind: Literal["feedback", "ticket"] = "feedback"
    time: str
    status: str | None = None
    when: tuple[Condition, ...] = ()
    checks: tuple[Check, ...] = ()
    rating: RatingSpec | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)  # overrides of the row's fields

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            return {**data, "name": data.get("status") or data.get("kind") or "feedback"}
        return data

    @field_validator("fields")
    @classmethod
    def _submission_fields(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        return _only_submission_fields(fields)

    @model_validator(mode="after")
    def _ticket_status(self) -> EventSpec:
        if self.kind == "ticket" and not self.status:
            raise ValueError("a ticket event needs a status")
        return self


def _only_submission_fields(fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
    unknown = [name for name in fields if name not in SUBMISSION_FIELDS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a submission field ({', '.join(SUBMISSION_FIELDS)})")
    return fields


class ImportMapping(_MappingModel):
    """A whole mapping file (docs/adapters.md#import-mappings)."""

    name: str | None = None
    description: str | None = None
    source: str  # default: name, else "import"
    format: Literal["csv", "jsonl"] | None = None  # None: from the file extension
    delimiter: str = ","
    encoding: str = "utf-8"
    timezone: TimeZoneName = "UTC"
    row_id: FieldSpec | None = None  # default: the record number
    fields: dict[str, FieldSpec]
    times: dict[str, TimeSpec] = Field(default_factory=dict)
    events: tuple[EventSpec, ...]

    @model_validator(mode="before")
    @classmethod
    def _default_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("source"):
            return {**data, "source": data.get("name") or "import"}
        return data

    @field_validator("fields")
    @classmethod
    def _channel_required(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        if "channel" not in _only_submission_fields(fields):
            raise ValueError("channel is required (a column or a constant value)")
        return fields

    @field_validator("events")
    @classmethod
    def _some_event(cls, events: tuple[EventSpec, ...]) -> tuple[EventSpec, ...]:
        if not events:
            raise ValueError("at least one event is required")
        return events

    @model_validator(mode="after")
    def _names_resolve(self) -> ImportMapping:
        """Every time named by a base, an event or a check is one of ``times``; event names are unique."""
        known = sorted(self.times)
        problems = [f"times.{name}.base: unknown time {spec.base!r}; times are {known}"
                    for name, spec in self.times.items() if spec.base is not None and spec.base not in self.times]
        for index, event in enumerate(self.events):
            if event.time not in self.times:
                problems.append(f"events[{index}].time {event.time!r} must name one of times: {known}")
            problems += [f"events[{index}].checks: not_before {check.not_before!r} must name one of times: {known}"
                         for check in event.checks if check.not_before not in self.times]
        names = [event.name for event in self.events]
        if len(set(names)) != len(names):
            problems.append(f"events: event names must be unique, got {names}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def columns(self) -> set[str]:
        """Every top-level column the mapping reads (checked against the CSV header before reading)."""
        specs: list[FieldSpec] = [*self.fields.values(), *(f for e in self.events for f in e.fields.values())]
        specs += [e.rating for e in self.events if e.rating is not None]
        if self.row_id is not None:
            specs.append(self.row_id)
        names = {s.column for s in specs if s.column is not None}
        for time in self.times.values():
            names.update(time.columns)
            names.update(d.column for d in time.plus)
        names.update(c.column for e in self.events for c in e.when)
        return {n.split(".")[0] for n in names}


def _problem(error: Mapping[str, Any]) -> str:
    """``field.path[0].name: message`` of one pydantic error."""
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if error["type"] in ("model_type", "dict_type"):
        message = f"expected a mapping (keys and values), got {type(error['input']).__name__}"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def parse_mapping(doc: object, where: str = "mapping") -> ImportMapping:
    """Check a mapping document (parsed YAML). Raises :class:`MappingError`: one line per problem, each
    ``where: field path: what was expected``."""
    try:
        return ImportMapping.model_validate(doc)
    except ValidationError as exc:
        raise MappingError("\n".join(f"{where}: {_problem(error)}" for error in exc.errors())) from None


def load_mapping(path: Path) -> ImportMapping:
    """Read and check a mapping file. Blocks on the read; raises :class:`MappingError` naming the file and the
    problem (also when the file cannot be read or is not YAML)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"cannot read mapping {path}: {exc}") from None
    return parse_mapping(doc, str(path))
