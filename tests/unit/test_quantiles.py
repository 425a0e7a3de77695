"""Duration quantiles are nearest rank (docs/metrics.md): the value at 1-based rank ceil(q * n) of the sorted
durations, read from a mergeable sketch within 1 % relative error."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.aggregates import WindowAgg, duration_agg, merged
from domain.sketch import SKETCH_ALPHA, nearest_rank, sketch_quantile

QUANTILES = (0.5, 0.9, 0.99)
durations_ms = st.lists(st.integers(min_value=1, max_value=365 * 24 * 3600 * 1000), min_size=1, max_size=300)


def exact_nearest_rank(xs: list[int], q: float) -> int:
    """The oracle, written independently of streams/: sorted(xs)[ceil(q * n) - 1], q as its decimal."""
    return sorted(xs)[math.ceil(Fraction(str(q)) * len(xs)) - 1]


def sketch_of(xs: list[int]) -> WindowAgg:
    return merged(duration_agg("resolution", x, False) for x in xs)


def assert_within_alpha(got: float | None, exact: int) -> None:
    assert got is not None
    assert abs(got - exact) <= SKETCH_ALPHA * exact * (1 + 1e-9), (got, exact)


@settings(max_examples=300)
@given(durations_ms)
def test_sketch_quantile_is_nearest_rank_within_one_percent(xs: list[int]) -> None:
    agg = sketch_of(xs)
    for q in QUANTILES:
        assert_within_alpha(sketch_quantile(agg.resolution_sketch, q), exact_nearest_rank(xs, q))


@settings(max_examples=200)
@given(durations_ms, durations_ms)
def test_merging_sketches_of_two_halves_equals_one_sketch_of_everything(xs: list[int], ys: list[int]) -> None:
    halves = sketch_of(xs)
    halves.merge(sketch_of(ys))
    whole = sketch_of(xs + ys)
    assert halves == whole
    for q in QUANTILES:
        assert sketch_quantile(halves.resolution_sketch, q) == sketch_quantile(whole.resolution_sketch, q)


def test_regression_rank_is_ceil_q_n_not_floor_q_n_minus_1() -> None:
    """Issue 14: of five durations 1..5 s, the p90 is the 5th (ceil(0.9 * 5) = 5), not the 4th that
    floor(0.9 * 4) = 3 picked as a 0-based index; likewise the p99 of 1..50 s is 50 s, not 49 s."""
    five = sketch_of([s * 1000 for s in range(1, 6)])
    assert five.resolution_quantile_seconds(0.9) == pytest.approx(5, rel=SKETCH_ALPHA)
    fifty = sketch_of([s * 1000 for s in range(1, 51)])
    assert fifty.resolution_quantile_seconds(0.99) == pytest.approx(50, rel=SKETCH_ALPHA)


@pytest.mark.parametrize(("q", "n", "rank"), [
    (0.9, 10, 9), (0.07, 100, 7), (0.5, 1, 1), (0.5, 4, 2), (0.99, 100, 99), (0.99, 101, 100), (0.0, 5, 1),
    (1.0, 5, 5),
])
def test_nearest_rank_does_not_round_exact_products_up(q: float, n: int, rank: int) -> None:
    assert nearest_rank(q, n) == rank


@pytest.mark.parametrize("q", [-0.1, 1.5])
def test_nearest_rank_rejects_q_outside_0_1(q: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        nearest_rank(q, 3)


def test_empty_sketch_has_no_quantile() -> None:
    assert WindowAgg().first_response_quantile_seconds(0.9) is None
