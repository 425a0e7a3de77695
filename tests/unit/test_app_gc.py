"""The worker's heap freezing: frozen objects leave the collector's view, and cyclic garbage that got frozen is
still collected by the periodic full collection."""

from __future__ import annotations

import asyncio
import gc
import weakref

from streams.app import freeze_heap_forever


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_freezes_and_collects_frozen_cycles_at_the_full_collection() -> None:
    async def scenario(full_every: float) -> weakref.ref[Node]:
        garbage = weakref.ref(Node())  # the only strong references are the cycle's own
        task = asyncio.create_task(freeze_heap_forever(freeze_every=0.01, full_every=full_every))
        await asyncio.sleep(0.1)
        task.cancel()
        return garbage

    try:
        gc.unfreeze()
        gc.disable()  # no automatic collection may free the cycle before it is frozen
        survivor = asyncio.run(scenario(full_every=3600))
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert survivor() is not None  # frozen: invisible to a normal collection
        gc.unfreeze()
        gc.collect()
        assert survivor() is None
        assert asyncio.run(scenario(full_every=0.05))() is None  # the full collection unfreezes and collects
    finally:
        gc.unfreeze()
        gc.enable()
