"""Replay protection of the webhook service: the delivery ids accepted within a TTL (each vendor's delivery
identity, :meth:`adapters.vendors.declaration.Vendor.delivery_id`), in memory; adapters/replay_store.py persists
them across restarts."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class Replayed(Exception):
    """The delivery was accepted within the replay window, or the same delivery is being handled right now."""


class ReplayGuard:
    """Bounded set of delivery ids seen within ``ttl_s`` (LRU eviction past ``max_size``).

    :meth:`held` is how the service uses it: the id is in flight during a with-block, recorded when the block
    completes and forgotten when it raises, so the vendor's retry of a delivery that failed is accepted, while a
    replay of a delivery that succeeded is refused. :meth:`reserve`, :meth:`commit` and :meth:`release` are its
    steps. In memory only, never blocks: the service persists committed ids with adapters/replay_store.py and
    restores them on start."""

    def __init__(self, max_size: int = 100_000, ttl_s: float = 86_400.0) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._in_flight: set[str] = set()
        self._max_size = max_size
        self._ttl_s = ttl_s

    def __len__(self) -> int:
        return len(self._seen)

    def restore(self, entries: Iterable[tuple[str, float]]) -> None:
        """Add ids accepted before (e.g. by a previous process, from adapters/replay_store.py), oldest first;
        the size and TTL bounds apply at the next :meth:`reserve` or :meth:`commit`."""
        for key, at in entries:
            self._seen[key] = at
            self._seen.move_to_end(key)

    def _expire(self, now: float) -> None:
        while self._seen:
            at = next(iter(self._seen.values()))
            if now - at <= self._ttl_s and len(self._seen) <= self._max_size:
                break
            self._seen.popitem(last=False)

    def reserve(self, key: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        self._expire(now)
        if key in self._in_flight or key in self._seen:
            return False
        self._in_flight.add(key)
        return True

    def commit(self, key: str, now: float | None = None) -> None:
        self._in_flight.discard(key)
        self._seen[key] = time.time() if now is None else now
        self._seen.move_to_end(key)
        self._expire(time.time() if now is None else now)

    def release(self, key: str) -> None:
        self._in_flight.discard(key)

    @contextmanager
    def held(self, key: str, now: float) -> Iterator[None]:
        """Hold ``key`` for the with-block: raises :class:`Replayed` before the block when ``key`` was committed
        within the TTL or is held already; commits it (at ``now``) when the block completes, releases it when
        the block raises anything (an error, a cancellation), so no failure path can leave it reserved."""
        if not self.reserve(key, now):
            raise Replayed(key)
        try:
            yield
        except BaseException:
            self.release(key)
            raise
        self.commit(key, now)
