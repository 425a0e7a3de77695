"""The worker's heap: freezing (a timer of streams/app.py calls :meth:`HeapFreezer.tick`) and malloc arenas."""

from __future__ import annotations

import ctypes
import gc
import os
import time

_M_ARENA_MAX = -8  # mallopt parameter of glibc's malloc.h
MALLOC_ARENAS = 2  # shared by the worker's threads (event loop, ClickHouse writer, ClickHouse reader)
GC_FULL_SECONDS = 3600.0  # how often every object is checked for cycles again (a pause: ~3 s at 5M objects)


class HeapFreezer:
    """Every :meth:`tick` (each ``GC_FREEZE_SECONDS``) moves every object alive into the collector's permanent
    generation, so that collections walk only what was allocated since (at 10k events/s with a few million
    objects of window state, one gen-2 collection stalled the worker 2.9 s and one gen-1 collection 1.1 s, the
    latency's p99). Frozen objects are still freed by reference counting when they die (window state holds no
    cycles); cyclic garbage that got frozen waits for the collection of everything every ``full_every``
    seconds."""

    def __init__(self, full_every: float = GC_FULL_SECONDS) -> None:
        self.full_every = full_every
        self._last_full = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self._last_full >= self.full_every:
            gc.unfreeze()
            gc.collect()
            self._last_full = time.monotonic()
        gc.freeze()


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Cap glibc's malloc arenas for what threads allocate from now on, as ``MALLOC_ARENA_MAX`` does (which,
    when set, wins): by default every thread that allocates gets an arena of its own, up to 8 per core, and
    memory freed in one is not reused by the others, which raises the peak RSS. Call before the worker starts
    its threads. Does nothing where the C library is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, arenas)
