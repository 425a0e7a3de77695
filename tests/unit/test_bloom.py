"""The Bloom filter that remembers evicted entities: never a false negative, a bounded false-positive rate."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.bloom import BloomFilter


@given(st.lists(st.text(max_size=30), max_size=300), st.integers(1, 64))
def test_every_added_item_is_found(items: list[str], capacity: int) -> None:
    bloom = BloomFilter(initial_capacity=capacity)
    for item in items:
        bloom.add(item)
    assert all(item in bloom for item in items)
    assert len(bloom) == len(items)


def test_false_positive_rate_stays_near_the_target_as_layers_are_added() -> None:
    bloom = BloomFilter(initial_capacity=1_000, error_rate=0.01)
    for i in range(20_000):  # five layers
        bloom.add(f"rating-{i}")
    false_positives = sum(f"other-{i}" in bloom for i in range(20_000))
    assert false_positives / 20_000 < 0.05  # at most about 1 % per layer
    assert bloom.nbytes < 2 * 20_000  # ~1.2 bytes per item (+ the unfilled last layer)
