"""A logarithmic sketch of durations (DDSketch-style buckets, fixed gamma): counts by bucket key. Pure.

A quantile read from a sketch is the nearest-rank quantile (:func:`nearest_rank`) within SKETCH_ALPHA relative
error, and sketches merge exactly (add their counts by key).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from fractions import Fraction

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
