"""The worker's heap freezing: frozen objects leave the collector's view, and cyclic garbage that got frozen is
still collected by the periodic full collection."""

from __future__ import annotations

import gc
import weakref

from streams.heap import HeapFreezer


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_freezes_and_collects_frozen_cycles_at_the_full_collection() -> None:
    def frozen_garbage(freezer: HeapFreezer) -> weakref.ref[Node]:
        garbage = weakref.ref(Node())  # the only strong references are the cycle's own
        freezer.tick()
        return garbage

    try:
        gc.unfreeze()
        gc.disable()  # no automatic collection may free the cycle before it is frozen
        survivor = frozen_garbage(HeapFreezer(full_every=3600))
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert survivor() is not None  # frozen: invisible to a normal collection
        gc.unfreeze()
        gc.collect()
        assert survivor() is None
        freezer = HeapFreezer(full_every=0)
        survivor = frozen_garbage(HeapFreezer(full_every=3600))
        freezer.tick()  # the full collection unfreezes and collects
        assert survivor() is None
    finally:
        gc.unfreeze()
        gc.enable()
