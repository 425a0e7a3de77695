"""A scalable Bloom filter of strings: remembers which entities left memory in about 2.4 bytes each. Pure.

``in`` never answers False for an added item; it answers True for an item never added with probability at
most about ``error_rate`` per layer (a new, twice larger layer starts whenever the current one is full, so the
rate stays bounded as items keep coming). Hashes come from Python's ``hash``, which is salted per process:
a filter is never persisted or shared.

A false positive costs a store lookup for an entity that is not there (a query per source and batch, ~10 ms on
chDB). New ratings arrive by the hundreds per source and batch, so the default rate is 0.01 %: at 1 %, once
evictions start, nearly every batch would pay that lookup.
"""

from __future__ import annotations

import math


class _Layer:
    def __init__(self, capacity: int, error_rate: float) -> None:
        self.capacity = capacity
        self.bits = max(8, math.ceil(-capacity * math.log(error_rate) / math.log(2) ** 2))
        self.hashes = max(1, round(self.bits / capacity * math.log(2)))
        self.array = bytearray((self.bits + 7) // 8)
        self.count = 0

    def add(self, h1: int, h2: int) -> None:
        bits, array = self.bits, self.array
        for i in range(self.hashes):
            p = (h1 + i * h2) % bits
            array[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def has(self, h1: int, h2: int) -> bool:
        bits, array = self.bits, self.array
        for i in range(self.hashes):  # an absent item usually fails at the first or second bit
            p = (h1 + i * h2) % bits
            if not array[p >> 3] & (1 << (p & 7)):
                return False
        return True


def _hashes(item: str) -> tuple[int, int]:
    """The two hashes every bit position of ``item`` derives from (double hashing), in any layer."""
    return hash(item), hash((item, 0x9E3779B9)) | 1


class BloomFilter:
    """Set membership with false positives only; memory grows by about 2.4 bytes per added item (0.01 %)."""

    def __init__(self, initial_capacity: int = 65_536, error_rate: float = 0.0001) -> None:
        self.error_rate = error_rate
        self._layers = [_Layer(initial_capacity, error_rate)]

    def add(self, item: str) -> None:
        layer = self._layers[-1]
        if layer.count >= layer.capacity:
            layer = _Layer(layer.capacity * 2, self.error_rate)
            self._layers.append(layer)
        layer.add(*_hashes(item))

    def __contains__(self, item: str) -> bool:
        h1, h2 = _hashes(item)
        return any(layer.has(h1, h2) for layer in self._layers)

    def __len__(self) -> int:
        """Items added (repeats included)."""
        return sum(layer.count for layer in self._layers)

    @property
    def nbytes(self) -> int:
        return sum(len(layer.array) for layer in self._layers)
