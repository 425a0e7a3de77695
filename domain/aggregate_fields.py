"""How the fields of a window aggregate are declared, and what the domain derives from that declaration. Pure.

A field is declared once, as a dataclass field whose default says its kind (the kind rides in the field's
``metadata``)::

    rated: int = count()                                   # an integer count
    first_response_ms: int = total(Mean("first_response_mean_seconds", per="first_responses", unit=1000))
    score_hist: list[int] = histogram(5)                   # counts in 5 fixed buckets
    resolution_sketch: dict[int, int] = sketch(Quantiles("resolution_p{}_seconds", unit=1000))

Every kind is an integer count, an integer sum or a collection of counts, so adding and subtracting are exact in
any order. From the declaration, :func:`with_arithmetic` generates ``add_scaled`` (one statement per field,
compiled once when the class is built, as dataclasses does for ``__init__``), :func:`figures_reader` compiles
the figures of the metrics-topic record and :func:`declared_figures` names them; ``sinks/declared_columns.py``
derives the ClickHouse columns, merge expressions and row encoders and decoders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from domain.sketch import sketch_quantile

_KIND = "satpulse_kind"  # the metadata key that holds a field's kind


# --- figures of the metrics-topic record (schemas/window_metric.avsc) -------------------------------------------
@dataclass(frozen=True, slots=True)
class Figure:
    """A published figure: its Avro field ``name``, whether it may be undefined (null), and whether it is an
    integer."""

    name: str
    optional: bool
    integer: bool  # an Avro long (else a double)


@dataclass(frozen=True, slots=True)
class Share:
    """Publishes 100 x the field / the count ``of`` (a percentage); undefined while that count is 0."""

    name: str
    of: str


@dataclass(frozen=True, slots=True)
class Mean:
    """Publishes the field / ``unit`` / the count ``per`` (e.g. ms -> mean seconds); undefined while it is 0."""

    name: str
    per: str
    unit: int = 1


@dataclass(frozen=True, slots=True)
class Total:
    """Publishes the field / ``unit`` as a double (e.g. micro-points -> points)."""

    name: str
    unit: int = 1


@dataclass(frozen=True, slots=True)
class Quantiles:
    """Publishes the nearest-rank quantiles of a sketch, ``name`` formatted with each percent (``p{}``), / ``unit``;
    undefined while the sketch is empty."""

    name: str
    unit: int = 1
    percents: tuple[int, ...] = (50, 90, 99)


Publication = Share | Mean | Total | Quantiles


# --- kinds --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Count:
    """An integer count; published under its own name, and as ``publish``."""

    publish: tuple[Publication, ...] = ()


@dataclass(frozen=True, slots=True)
class Sum:
    """An integer sum (micro-points, milliseconds); published only as ``publish``."""

    publish: tuple[Publication, ...] = ()


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts in ``buckets`` fixed buckets (a list); not published."""

    buckets: int


@dataclass(frozen=True, slots=True)
class Sketch:
    """Counts by sketch bucket key (a dict holding no zero counts); published only as ``publish``."""

    publish: tuple[Publication, ...] = ()


Kind = Count | Sum | Histogram | Sketch


def count(*publish: Share) -> int:
    """Declares an integer count field (default 0), published under its own name and as ``publish``."""
    kind: Kind = Count(publish)
    return dataclasses.field(default=0, metadata={_KIND: kind})


def total(*publish: Mean | Total) -> int:
    """Declares an integer sum field (default 0), published as ``publish``."""
    kind: Kind = Sum(publish)
    return dataclasses.field(default=0, metadata={_KIND: kind})


def histogram(buckets: int) -> list[int]:
    """Declares a histogram field of ``buckets`` counts (default all 0)."""
    kind: Kind = Histogram(buckets)
    return dataclasses.field(default_factory=lambda: [0] * buckets, metadata={_KIND: kind})


def sketch(*publish: Quantiles) -> dict[int, int]:
    """Declares a sketch field: counts by bucket key (default empty), published as ``publish``."""
    kind: Kind = Sketch(publish)
    return dataclasses.field(default_factory=dict, metadata={_KIND: kind})


@dataclass(frozen=True, slots=True)
class Declared:
    """One declared field: its name and kind."""

    name: str
    kind: Kind


def declared_fields(cls: type[Any]) -> tuple[Declared, ...]:
    """The declared fields of dataclass ``cls``, in declaration order. Raises TypeError for a field declared
    without a kind (a plain default)."""
    out = []
    for f in dataclasses.fields(cls):
        if _KIND not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} has no kind: declare it with count(), total(), histogram() "
                            "or sketch()")
        out.append(Declared(f.name, f.metadata[_KIND]))
    return tuple(out)


# --- arithmetic -----------------------------------------------------------------------------------------------
def add_counts(target: dict[int, int], other: Mapping[int, int], sign: int) -> None:
    """Add ``sign`` times the counts of ``other`` to ``target`` by key, dropping keys that reach 0. ``other`` may
    be ``target`` itself (``agg.subtract(agg)`` empties it)."""
    for key, n in list(other.items()) if other is target else other.items():
        value = target.get(key, 0) + sign * n
        if value:
            target[key] = value
        else:
            target.pop(key, None)


def add_scaled_source(fields: tuple[Declared, ...]) -> str:
    """Source of ``add_scaled(self, other, sign)`` for ``fields``: scalars, histogram buckets unrolled, then
    sketches (only when ``other``'s is not empty), each spelled out as a hand-written loop body would be."""
    lines = ["def add_scaled(self, other, sign):"]
    for f in fields:
        if isinstance(f.kind, Count | Sum):
            lines.append(f"    self.{f.name} += sign * other.{f.name}")
    for f in fields:
        if isinstance(f.kind, Histogram):
            lines.append(f"    mine, theirs = self.{f.name}, other.{f.name}")
            lines += [f"    mine[{i}] += sign * theirs[{i}]" for i in range(f.kind.buckets)]
    for f in fields:
        if isinstance(f.kind, Sketch):
            lines += [f"    if other.{f.name}:", f"        add_counts(self.{f.name}, other.{f.name}, sign)"]
    return "\n".join(lines) + "\n"


C = TypeVar("C", bound=type[Any])


def compiled(source: str, name: str, namespace: Mapping[str, Any]) -> Callable[..., Any]:
    """The function ``name`` defined by ``source`` (our own code, built from declared field names) with the
    globals ``namespace``: how derived code runs as fast as code written out by hand."""
    scope = dict(namespace)
    exec(source, scope)
    function: Callable[..., Any] = scope[name]
    return function


def with_arithmetic(cls: C) -> C:
    """Class decorator (above ``@dataclass``): replaces the placeholder ``add_scaled`` of ``cls`` (which keeps
    its signature and docstring for readers and type checkers) by one compiled from its declared fields."""
    generated = compiled(add_scaled_source(declared_fields(cls)), "add_scaled", {"add_counts": add_counts})
    generated.__qualname__ = f"{cls.__qualname__}.add_scaled"
    generated.__module__ = cls.__module__
    generated.__doc__ = cls.add_scaled.__doc__
    cls.add_scaled = generated
    return cls


# --- the metrics-topic record -------------------------------------------------------------------------------------
def share(part: int, whole: int) -> float | None:
    """100 x part / whole; None (never 0, never NaN) when whole is 0."""
    return 100.0 * part / whole if whole else None


def mean(amount: int, n: int, unit: int = 1) -> float | None:
    """amount / unit / n; None when n is 0."""
    return amount / unit / n if n else None


def quantile(counts: Mapping[int, int], q: float, unit: int = 1) -> float | None:
    """The nearest-rank ``q``-quantile of a sketch / unit (:func:`domain.sketch.sketch_quantile`); None when empty."""
    value = sketch_quantile(counts, q)
    return None if value is None else value / unit


def declared_figures(fields: tuple[Declared, ...]) -> tuple[Figure, ...]:
    """The figures the metrics-topic record carries for ``fields``, in declaration order."""
    return tuple(figure for f in fields for figure, _ in _figures(f))


def figures_reader(fields: tuple[Declared, ...]) -> Callable[[Any], dict[str, int | float | None]]:
    """A function giving the figures of an aggregate (of the class that declared ``fields``) by name; compiled
    from the declaration, as fast as the record written out by hand."""
    items = "".join(f"        {figure.name!r}: {expression},\n" for f in fields for figure, expression in _figures(f))
    source = f"def figures(agg):\n    return {{\n{items}    }}\n"
    return compiled(source, "figures", {"share": share, "mean": mean, "quantile": quantile})


def _figures(f: Declared) -> Iterator[tuple[Figure, str]]:
    """(figure, the expression of its value in ``agg``) of each figure of field ``f``."""
    kind, value = f.kind, f"agg.{f.name}"
    if isinstance(kind, Histogram):
        return
    if isinstance(kind, Count):
        yield Figure(f.name, optional=False, integer=True), value
    for p in kind.publish:
        if isinstance(p, Share):
            yield Figure(p.name, optional=True, integer=False), f"share({value}, agg.{p.of})"
        elif isinstance(p, Mean):
            yield Figure(p.name, optional=True, integer=False), f"mean({value}, agg.{p.per}, {p.unit})"
        elif isinstance(p, Total):
            yield Figure(p.name, optional=False, integer=False), f"{value} / {p.unit}"
        else:
            for percent in p.percents:
                yield (Figure(p.name.format(percent), optional=True, integer=False),
                       f"quantile({value}, {percent / 100!r}, {p.unit})")
