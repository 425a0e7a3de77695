"""Mergeable, subtractable window aggregates. Pure; every field is an integer count or integer sum, so
merging partitions, workers and windows (roll-ups) is exact in any order, and a contribution that changes
(a rating edit, a reopened case resolved again) is withdrawn exactly.

Durations go into a logarithmic sketch (:mod:`domain.sketch`): a quantile read from it is the nearest-rank
quantile within 1 % relative error.

:class:`WindowAgg` is the one declaration of a window cell's fields
(docs/metrics.md#adding-a-metric-or-a-dimension): their arithmetic, ClickHouse columns, row encoders and
decoders and the metrics-topic record are derived from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from domain.aggregate_fields import (
    Mean,
    Quantiles,
    Share,
    Total,
    count,
    declared_fields,
    figures_reader,
    histogram,
    mean,
    quantile,
    share,
    sketch,
    total,
    with_arithmetic,
)
from domain.sketch import sketch_key

SCORE_SCALE = 1_000_000  # scores are summed as integer micro-points


@with_arithmetic
@dataclass(slots=True)
class WindowAgg:
    """Counts of one window cell. ``merge``/``subtract`` are exact inverses. Each field is declared with its kind
    and what the metrics topic publishes of it (:mod:`domain.aggregate_fields`); the order is the column order."""

    # feedback
    rated: int = count()
    satisfied: int = count(Share("csat_percent", of="rated"))
    scored: int = count()
    score_micros: int = total(Total("score_sum", unit=SCORE_SCALE),
                              Mean("average_score", per="scored", unit=SCORE_SCALE))
    score_hist: list[int] = histogram(5)  # scores in [1,2), [2,3), [3,4), [4,5), 5
    # support cases
    created: int = count()
    reopened: int = count()
    first_responses: int = count()
    first_response_ms: int = total(Mean("first_response_mean_seconds", per="first_responses", unit=1000))
    first_response_sketch: dict[int, int] = sketch(Quantiles("first_response_p{}_seconds", unit=1000))
    first_response_breaches: int = count()
    resolved: int = count()
    resolution_ms: int = total(Mean("resolution_mean_seconds", per="resolved", unit=1000))
    resolution_sketch: dict[int, int] = sketch(Quantiles("resolution_p{}_seconds", unit=1000))
    resolution_breaches: int = count()

    def add_scaled(self, other: WindowAgg, sign: int) -> None:
        """Add ``sign`` times ``other`` (any integer: -1 subtracts, 3 adds three equal contributions). The
        innermost loop of the window stage: compiled from the fields above by ``with_arithmetic``, one statement
        per field, as fast as spelled out by hand."""

    def merge(self, other: WindowAgg) -> None:
        self.add_scaled(other, 1)

    def subtract(self, other: WindowAgg) -> None:
        self.add_scaled(other, -1)

    def is_empty(self) -> bool:
        return self == type(self)()

    def copy(self) -> WindowAgg:
        out = type(self)()
        out.add_scaled(self, 1)
        return out

    # --- derived metrics (docs/metrics.md), with the formulas the metrics topic publishes ------------------------
    @property
    def csat_percent(self) -> float | None:
        """100 x satisfied / rated; None (never 0, never NaN) when nothing was rated."""
        return share(self.satisfied, self.rated)

    @property
    def average_score(self) -> float | None:
        return mean(self.score_micros, self.scored, SCORE_SCALE)

    @property
    def mean_resolution_seconds(self) -> float | None:
        return mean(self.resolution_ms, self.resolved, 1000)

    @property
    def mean_first_response_seconds(self) -> float | None:
        return mean(self.first_response_ms, self.first_responses, 1000)

    def resolution_quantile_seconds(self, q: float) -> float | None:
        return quantile(self.resolution_sketch, q, 1000)

    def first_response_quantile_seconds(self, q: float) -> float | None:
        return quantile(self.first_response_sketch, q, 1000)


WINDOW_AGG_FIELDS = declared_fields(WindowAgg)
# the figures of an aggregate in the metrics-topic record (schemas/window_metric.avsc), by name
published_figures: Callable[[WindowAgg], dict[str, int | float | None]] = figures_reader(WINDOW_AGG_FIELDS)


def rating_agg(satisfied: bool, score: float | None) -> WindowAgg:
    """The contribution of one rating."""
    agg = WindowAgg(rated=1, satisfied=int(satisfied))
    if score is not None:
        agg.scored = 1
        agg.score_micros = round(score * SCORE_SCALE)
        agg.score_hist[min(int(score), 5) - 1] += 1
    return agg


def duration_agg(kind: str, duration_ms: int, breached: bool) -> WindowAgg:
    """The contribution of one first-response (``kind`` = first_response) or resolution sample."""
    key = {sketch_key(duration_ms): 1}
    if kind == "first_response":
        return WindowAgg(first_responses=1, first_response_ms=duration_ms, first_response_sketch=key,
                         first_response_breaches=int(breached))
    return WindowAgg(resolved=1, resolution_ms=duration_ms, resolution_sketch=key,
                     resolution_breaches=int(breached))


def merged(aggs: Iterable[WindowAgg]) -> WindowAgg:
    out = WindowAgg()
    for agg in aggs:
        out.merge(agg)
    return out
