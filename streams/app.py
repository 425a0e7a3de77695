"""The worker process (``satpulse worker``): :class:`streams.pipeline.Pipeline` on uvloop, ``GET /metrics`` (and
``/health``) on the worker's web port, and a clean stop on SIGTERM/SIGINT: the batch in flight is finished and
committed, the roll-ups refreshed, the consumer group left.

Not a Faust app (see streams/pipeline.py for why the hot path is not a Faust agent): an app without agents
still joined a consumer group of its own, and after a kill -9 its restart waited for the dead member's Faust
session to expire before it started the pipeline.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time

import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from satpulse import metrics
from satpulse.settings import Settings
from sinks.retry import RetryStopped
from streams.pipeline import Pipeline

log = logging.getLogger(__name__)
STOP_TIMEOUT_SECONDS = 8.0  # how long a stop waits for the batch in flight before cancelling it
GC_FREEZE_SECONDS = 1.0  # how often objects alive so far leave the cycle collector's view (gc.freeze)
GC_FULL_SECONDS = 3600.0  # how often every object is checked for cycles again (a pause: ~3 s at 5M objects)


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT (returns) or until a stage fails (raises; the batch in flight is replayed by the
    next start). Blocks."""
    # Window state is a large heap of small long-lived objects; with the default thresholds the collector walks
    # it again and again (half of the window stage's CPU in profiles). Reference counting still frees everything
    # acyclic at once; this only makes the cycle collector run less often.
    gc.set_threshold(100_000, 50, 1000)
    uvloop.run(_serve(settings))


async def freeze_heap_forever(freeze_every: float = GC_FREEZE_SECONDS, full_every: float = GC_FULL_SECONDS
                              ) -> None:
    """Every ``freeze_every`` seconds move every object alive into the collector's permanent generation, so that
    collections walk only what was allocated since (at 10k events/s with a few million objects of window state,
    one gen-2 collection stalled the worker 2.9 s and one gen-1 collection 1.1 s, the latency's p99). Frozen
    objects are still freed by reference counting when they die (window state holds no cycles); cyclic garbage
    that got frozen waits for the collection of everything every ``full_every`` seconds."""
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(freeze_every)
        if time.monotonic() - last_full >= full_every:
            gc.unfreeze()
            gc.collect()
            last_full = time.monotonic()
        gc.freeze()


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    web_runner = await _start_web(settings)
    pipeline = Pipeline(settings)
    stopped = asyncio.create_task(stop.wait())
    tasks: list[asyncio.Task[None]] = []
    try:
        starting = asyncio.create_task(pipeline.start())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # stopped while waiting for ClickHouse or Kafka at start
            pipeline.request_stop()
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return
        starting.result()
        consume = asyncio.create_task(pipeline.run())
        tasks = [consume, asyncio.create_task(pipeline.tick_forever(settings.publish_interval_seconds)),
                 asyncio.create_task(freeze_heap_forever())]
        await asyncio.wait({*tasks, stopped}, return_when=asyncio.FIRST_COMPLETED)
        pipeline.request_stop()
        tasks[1].cancel()
        try:  # finish (and commit) the batch in flight; a failed stage raises here
            await asyncio.wait_for(consume, STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("the batch in flight did not finish in %.0f s; it is replayed at the next start",
                        STOP_TIMEOUT_SECONDS)
        except RetryStopped:
            log.warning("stopped while waiting for ClickHouse; the batch in flight is replayed at the next start")
        if not tasks[1].cancelled() and tasks[1].done():
            tasks[1].result()  # the timer failed: raise it
    finally:
        stopped.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.stop()
        await web_runner.cleanup()


async def _start_web(settings: Settings) -> web.AppRunner:
    """Serve /metrics (Prometheus exposition) and /health on the worker's web port."""

    async def prometheus_metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host = "127.0.0.1" if settings.kafka_bootstrap.startswith("127.") else "0.0.0.0"
    await web.TCPSite(runner, host, settings.worker_web_port).start()
    return runner
