"""A scalable Bloom filter of strings: remembers which entities left memory in about 1.2 bytes each. Pure.

``in`` never answers False for an added item; it answers True for an item never added with probability at
most about ``error_rate`` per layer (a new, twice larger layer starts whenever the current one is full, so the
rate stays bounded as items keep coming). Hashes come from Python's ``hash``, which is salted per process:
a filter is never persisted or shared.
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

    def _positions(self, item: str) -> list[int]:
        h1 = hash(item)
        h2 = hash((item, 0x9E3779B9)) | 1
        return [(h1 + i * h2) % self.bits for i in range(self.hashes)]

    def add(self, item: str) -> None:
        for p in self._positions(item):
            self.array[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def __contains__(self, item: str) -> bool:
        return all(self.array[p >> 3] & (1 << (p & 7)) for p in self._positions(item))


class BloomFilter:
    """Set membership with false positives only; memory grows by about 1.2 bytes per added item (1 %)."""

    def __init__(self, initial_capacity: int = 65_536, error_rate: float = 0.01) -> None:
        self.error_rate = error_rate
        self._layers = [_Layer(initial_capacity, error_rate)]

    def add(self, item: str) -> None:
        layer = self._layers[-1]
        if layer.count >= layer.capacity:
            layer = _Layer(layer.capacity * 2, self.error_rate)
            self._layers.append(layer)
        layer.add(item)

    def __contains__(self, item: str) -> bool:
        return any(item in layer for layer in self._layers)

    def __len__(self) -> int:
        """Items added (repeats included)."""
        return sum(layer.count for layer in self._layers)

    @property
    def nbytes(self) -> int:
        return sum(len(layer.array) for layer in self._layers)
