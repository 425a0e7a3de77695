"""ClickHouse columns derived from the domain's declarations, for every module that names them (the window store,
roll-ups, queries and migrations): the aggregate columns of ``window_cells`` from the fields of
:class:`domain.aggregates.WindowAgg` and their kinds, and the dimension columns of the event tables from
:data:`domain.entities.DIMENSION_FIELDS`.

Per kind, a field is stored, merged over rows (sources, roll-ups) and read back as:

- count, total: ``name UInt64``; merged ``sum(name)``;
- histogram(n): ``name Array(UInt64)``; merged ``sumForEach(name)``; read back as n counts (a row written before the
  column existed holds ``[]``: n zeros);
- sketch: ``name_keys Array(UInt16)`` and ``name_counts Array(UInt64)``, parallel and sorted by key; merged
  ``sumMap(name_keys, name_counts)``; read back as ``{key: count}`` without zero counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from domain.aggregate_fields import Count, Declared, Histogram, Sketch, Sum, compiled, declared_fields
from domain.aggregates import WindowAgg
from domain.entities import DIMENSION_FIELDS
from domain.windows import CellRow

# window_cells: the key of a cell row, then the aggregate columns, then these
KEY_COLUMNS = ("dimension", "dimension_value", "window_seconds", "window_start", "source_topic", "source_partition")
VERSION_COLUMNS = ("version", "written_at")
# a dimension column of feedback_events and ticket_events (channel and source, always set, are String)
DIMENSION_TYPE = "Nullable(String)"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # ClickHouse type


A = TypeVar("A", bound=WindowAgg)


class CellLayout(Generic[A]):
    """How aggregates of the declared class ``agg_type`` are stored in ``window_cells`` rows: the columns,
    what selects them (one row, or merged over rows) and the row encoder and decoder, all by field name."""

    def __init__(self, agg_type: type[A]) -> None:
        self.agg_type = agg_type
        self.fields = declared_fields(agg_type)
        self.agg_columns: tuple[Column, ...] = tuple(c for f in self.fields for c in _columns(f))
        self.columns = (*KEY_COLUMNS, *(c.name for c in self.agg_columns), *VERSION_COLUMNS)  # of an INSERT
        self.merged_exprs = tuple(_merged(f) for f in self.fields)  # one per field, aggregated over rows
        self.merged_sql = ", ".join(self.merged_exprs)
        self.single_sql = ", ".join(_single(f) for f in self.fields)  # one per field, of one row
        self._names = tuple(f.name for f in self.fields)
        # once per cell written: compiled from the fields, as add_scaled is (a loop over them took 4x as long)
        self.row: Callable[[CellRow, int, int], tuple[Any, ...]] = compiled(_row_source(self.fields), "row", {})
        """``row(cell, window_seconds, now)``: the values of :attr:`columns` for a cell (``now``: written_at)."""
        self._decoders = tuple(_decoder(f) for f in self.fields)

    def unpacked(self, aliases: Sequence[str]) -> str:
        """The aggregate columns from ``aliases`` of :attr:`merged_exprs` results (one per field), for an
        ``INSERT ... SELECT``: a sketch's (keys, counts) tuple fills its two columns."""
        return ", ".join(f"tupleElement({alias}, 1), tupleElement({alias}, 2)" if isinstance(f.kind, Sketch)
                         else alias for f, alias in zip(self.fields, aliases, strict=True))

    def decode(self, values: Sequence[Any]) -> A:
        """The aggregate from the values of :attr:`merged_sql` or :attr:`single_sql` (one per field)."""
        return self.agg_type(**{name: decode(value) for name, decode, value
                                in zip(self._names, self._decoders, values, strict=True)})


def _columns(f: Declared) -> tuple[Column, ...]:
    kind = f.kind
    if isinstance(kind, Count | Sum):
        return (Column(f.name, "UInt64"),)
    if isinstance(kind, Histogram):
        return (Column(f.name, "Array(UInt64)"),)
    return Column(f"{f.name}_keys", "Array(UInt16)"), Column(f"{f.name}_counts", "Array(UInt64)")


def _merged(f: Declared) -> str:
    if isinstance(f.kind, Count | Sum):
        return f"sum({f.name})"
    if isinstance(f.kind, Histogram):
        return f"sumForEach({f.name})"
    return f"sumMap({f.name}_keys, {f.name}_counts)"


def _single(f: Declared) -> str:
    return f"({f.name}_keys, {f.name}_counts)" if isinstance(f.kind, Sketch) else f.name


def _row_source(fields: tuple[Declared, ...]) -> str:
    """Source of ``row(cell, window_seconds, now)``: a window_cells row, each value spelled out by field name."""
    lines = ["def row(cell, window_seconds, now):", "    agg = cell.agg", "    dimension, value, start = cell.key",
             "    topic, partition = cell.source"]
    values = ["dimension", "value", "window_seconds", "start // 1000", "topic", "partition"]
    for f in fields:
        if isinstance(f.kind, Count | Sum):
            values.append(f"agg.{f.name}")
        elif isinstance(f.kind, Histogram):
            values.append(f"list(agg.{f.name})")
        else:  # a sketch: parallel keys and counts, sorted by key
            lines.append(f"    sorted_{f.name} = sorted(agg.{f.name}.items())")
            values += [f"[k for k, _ in sorted_{f.name}]", f"[c for _, c in sorted_{f.name}]"]
    lines.append(f"    return ({', '.join(values)}, cell.version, now)")
    return "\n".join(lines) + "\n"


def _decoder(f: Declared) -> Callable[[Any], Any]:
    kind = f.kind
    if isinstance(kind, Count | Sum):
        return int
    if isinstance(kind, Histogram):
        buckets = kind.buckets
        return lambda counts: [int(x) for x in counts] or [0] * buckets
    return _sketch_from_pair


def _sketch_from_pair(pair: tuple[Sequence[Any], Sequence[Any]]) -> dict[int, int]:
    keys, counts = pair
    return {int(k): int(c) for k, c in zip(keys, counts, strict=True) if int(c)}


def dimension_columns(dimensions: Sequence[str] = DIMENSION_FIELDS) -> tuple[Column, ...]:
    """The dimension columns every event table has."""
    return tuple(Column(name, DIMENSION_TYPE) for name in dimensions)


CELLS = CellLayout(WindowAgg)
# the columns each table must have by declaration (sinks.migrations adds the missing ones)
DECLARED_COLUMNS: dict[str, tuple[Column, ...]] = {
    "window_cells": CELLS.agg_columns, "feedback_events": dimension_columns(), "ticket_events": dimension_columns()}
