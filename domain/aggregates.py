"""Mergeable, subtractable window aggregates. Pure; every field is an integer count or integer sum, so
merging partitions, workers and windows (roll-ups) is exact in any order, and a contribution that changes
(a rating edit, a reopened case resolved again) is withdrawn exactly.

Durations go into a logarithmic sketch (DDSketch-style buckets, fixed gamma): a quantile read from it is
the nearest-rank quantile (:func:`nearest_rank`) within 1 % relative error.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

SCORE_SCALE = 1_000_000  # scores are summed as integer micro-points
SKETCH_ALPHA = 0.01  # relative error bound of sketch quantiles
_GAMMA = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA)
_LOG_GAMMA = math.log(_GAMMA)


def sketch_key(duration_ms: int) -> int:
    """Bucket of a non-negative duration: 0 for <= 1 ms, else ceil(log_gamma(ms))."""
    return 0 if duration_ms <= 1 else math.ceil(math.log(duration_ms) / _LOG_GAMMA)


def sketch_value(key: int) -> float:
    """Representative duration (ms) of a bucket: within SKETCH_ALPHA of every value in it."""
    return 1.0 if key == 0 else 2 * _GAMMA**key / (_GAMMA + 1)


@functools.lru_cache(maxsize=64)
def _decimal_ratio(q: float) -> tuple[int, int]:
    """``q`` as the exact fraction of its shortest decimal spelling: 0.9 -> (9, 10), not the binary double."""
    ratio = Fraction(repr(q))
    return ratio.numerator, ratio.denominator


def nearest_rank(q: float, n: int) -> int:
    """1-based rank of the nearest-rank ``q``-quantile of ``n`` >= 1 sorted values: the smallest rank with at
    least a fraction ``q`` of the values at or below it, ceil(q * n) (at least 1). ``q`` is taken as the decimal
    it is written as, so binary rounding never pushes an exact product up (q=0.9, n=10 -> 9; q=0.07, n=100
    -> 7). Raises ValueError unless 0 <= q <= 1."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    num, den = _decimal_ratio(q)
    return max(1, -(-num * n // den))


def sketch_quantile(sketch: Mapping[int, int], q: float) -> float | None:
    """Nearest-rank ``q``-quantile (ms) of the sketched items, within SKETCH_ALPHA relative error of the exact
    one (:func:`nearest_rank`); None for an empty sketch."""
    n = sum(sketch.values())
    if n == 0:
        return None
    rank = nearest_rank(q, n)
    seen = 0
    for key in sorted(sketch):
        seen += sketch[key]
        if seen >= rank:
            return sketch_value(key)
    raise AssertionError("unreachable: rank <= n")


def _add_map(target: dict[int, int], other: Mapping[int, int], sign: int) -> None:
    for key, count in other.items():
        value = target.get(key, 0) + sign * count
        if value:
            target[key] = value
        else:
            target.pop(key, None)


@dataclass(slots=True)
class WindowAgg:
    """Counts of one window cell. ``merge``/``subtract`` are exact inverses."""

    # feedback
    rated: int = 0
    satisfied: int = 0
    scored: int = 0
    score_micros: int = 0
    score_hist: list[int] = field(default_factory=lambda: [0] * 5)  # scores in [1,2), [2,3), [3,4), [4,5), 5
    # support cases
    created: int = 0
    reopened: int = 0
    first_responses: int = 0
    first_response_ms: int = 0
    first_response_sketch: dict[int, int] = field(default_factory=dict)
    first_response_breaches: int = 0
    resolved: int = 0
    resolution_ms: int = 0
    resolution_sketch: dict[int, int] = field(default_factory=dict)
    resolution_breaches: int = 0

    def add_scaled(self, other: WindowAgg, sign: int) -> None:
        """Add ``sign`` times ``other`` (any integer: -1 subtracts, 3 adds three equal contributions). Spelled
        out field by field: this is the innermost loop of the window stage."""
        self.rated += sign * other.rated
        self.satisfied += sign * other.satisfied
        self.scored += sign * other.scored
        self.score_micros += sign * other.score_micros
        hist, their_hist = self.score_hist, other.score_hist
        for i in range(5):
            hist[i] += sign * their_hist[i]
        self.created += sign * other.created
        self.reopened += sign * other.reopened
        self.first_responses += sign * other.first_responses
        self.first_response_ms += sign * other.first_response_ms
        self.first_response_breaches += sign * other.first_response_breaches
        self.resolved += sign * other.resolved
        self.resolution_ms += sign * other.resolution_ms
        self.resolution_breaches += sign * other.resolution_breaches
        if other.first_response_sketch:
            _add_map(self.first_response_sketch, other.first_response_sketch, sign)
        if other.resolution_sketch:
            _add_map(self.resolution_sketch, other.resolution_sketch, sign)

    def merge(self, other: WindowAgg) -> None:
        self.add_scaled(other, 1)

    def subtract(self, other: WindowAgg) -> None:
        self.add_scaled(other, -1)

    def is_empty(self) -> bool:
        return self == WindowAgg()

    def copy(self) -> WindowAgg:
        out = WindowAgg()
        out.merge(self)
        return out

    # --- derived metrics (docs/metrics.md) ------------------------------------------------------------
    @property
    def csat_percent(self) -> float | None:
        """100 x satisfied / rated; None (never 0, never NaN) when nothing was rated."""
        return 100.0 * self.satisfied / self.rated if self.rated else None

    @property
    def average_score(self) -> float | None:
        return self.score_micros / SCORE_SCALE / self.scored if self.scored else None

    @property
    def mean_resolution_seconds(self) -> float | None:
        return self.resolution_ms / 1000 / self.resolved if self.resolved else None

    @property
    def mean_first_response_seconds(self) -> float | None:
        return self.first_response_ms / 1000 / self.first_responses if self.first_responses else None

    def resolution_quantile_seconds(self, q: float) -> float | None:
        value = sketch_quantile(self.resolution_sketch, q)
        return None if value is None else value / 1000

    def first_response_quantile_seconds(self, q: float) -> float | None:
        value = sketch_quantile(self.first_response_sketch, q)
        return None if value is None else value / 1000


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
