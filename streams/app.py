"""The worker as a Faust application: ``satpulse worker`` and ``faust -A streams.app worker`` run this app.

The clean, window and dead-letter stages are Faust agents whose unit of work is one fetched batch
(:class:`streams.pipeline.Batch`): the ``consume`` task fetches batches with the pipeline's broker (its
aiokafka consumer) and sends each to the ``clean`` agent, which hands it on to ``window`` and then
``dead_letters``; each runs one :meth:`streams.pipeline.Pipeline.step`, and the last step commits the batch's
offsets once every stage's outputs were acknowledged and written (the commit protocol of streams/pipeline.py).
Agents take their batches in fetch order, so batches are committed in that order; with two batches in flight,
cleaning batch k+1 overlaps counting batch k. A rebalance waits until the batches in flight are committed
(Pipeline.revoke). A stage that raises fails its batch; the task then crashes the app, and the next start
replays from the last commit. Faust runs the process: uvloop, lifecycle and signals (SIGTERM finishes the
batches in flight and commits them within :data:`STOP_TIMEOUT_SECONDS`), logging, the web server with
``/metrics`` and ``/health``, timers and the CLI.

Why a task that owns the consumer and in-memory channels (design b), not a transport driver that hands
Faust's own fetched batches to the agents (design a): it uses only Faust's public API (channels, agents,
tasks, timers, pages, ``BootStrategy``), so a faust-streaming upgrade cannot break the commit protocol,
while design a overrides non-public consumer methods. It costs nothing measurable: a batch passes the three
channels in ~30 µs, against ~20,000 events of work. Faust's own Kafka consumer and producer are switched
off (:class:`_Boot`): the pipeline's consumer is the only group member, so a restart after kill -9 does not
wait for a second group's dead member to expire, and its rebalance callbacks keep the window state safe.

Faust tables are not used: the window state lives in ClickHouse (cells, events and per-source high-water
marks, written in the same insert as the counts it guards), which is what makes a replay exact; a changelog
topic would be a second source of truth written at another moment. The watermark is recomputed from that
state at start, and webhook replay ids belong to the ingestion service, not to this process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections import deque
from contextlib import suppress
from typing import Any

import faust
import uvloop
from faust.app.base import BootStrategy
from faust.worker import Worker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dashboard.web import register as register_dashboard
from satpulse import metrics
from satpulse.settings import Settings, get_settings
from satpulse.stages import Stage
from sinks.retry import RetryStopped
from streams.backfill import backfill_summary
from streams.heap import HeapFreezer, limit_malloc_arenas
from streams.pipeline import Batch, Pipeline

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 2  # batches between fetch and commit: cleaning batch k+1 overlaps counting batch k
STOP_TIMEOUT_SECONDS = 8.0  # how long a stop waits for the batches in flight before giving them up (replayed)
GC_FREEZE_SECONDS = 1.0  # how often objects alive so far leave the cycle collector's view (gc.freeze)


class _Boot(BootStrategy):
    """Faust's services without its Kafka consumer and producer (the pipeline has its own)."""

    enable_kafka_consumer = False
    enable_kafka_producer = False


class SatpulseApp(faust.App):
    BootStrategy = _Boot


def create_app(settings: Settings) -> tuple[faust.App, Pipeline]:
    """The worker app and the pipeline it runs. Nothing starts before the app does."""
    app = SatpulseApp(
        settings.worker_id, broker=f"kafka://{settings.kafka_bootstrap}", store="memory://", autodiscover=False,
        datadir=str(settings.work_dir / "faust"), web_port=settings.worker_web_port,
        web_bind="127.0.0.1" if settings.kafka_bootstrap.startswith("127.") else "0.0.0.0",
        web_in_thread=False, loghandlers=[])
    pipeline = Pipeline(settings)
    heap = HeapFreezer()
    started_at = time.monotonic()
    stopped = asyncio.Event()  # set when the consume task returned (its batches committed or given up)
    ticking = asyncio.Lock()  # held by a tick in progress

    # the stage chain: each agent runs its stage of a batch (Pipeline.step) and hands the batch on; the last
    # one commits it
    @app.agent(app.channel(maxsize=MAX_IN_FLIGHT), name="dead_letters")
    async def dead_letters(batches: Any) -> None:
        async for batch in batches:
            await pipeline.step(Stage.DEAD_LETTERS, batch)

    @app.agent(app.channel(maxsize=MAX_IN_FLIGHT), name="window")
    async def window(batches: Any) -> None:
        async for batch in batches:
            if await pipeline.step(Stage.WINDOW, batch):
                await dead_letters.send(value=batch)

    @app.agent(app.channel(maxsize=MAX_IN_FLIGHT), name="clean")
    async def clean(batches: Any) -> None:
        async for batch in batches:
            if await pipeline.step(Stage.CLEAN, batch):
                await window.send(value=batch)

    @app.task  # type: ignore[untyped-decorator]
    async def consume() -> None:
        """Start the pipeline, then fetch batches and send them through the stage agents, at most
        :data:`MAX_IN_FLIGHT` at a time, until a stop; a failed batch crashes the app (nothing after the last
        commit is kept)."""
        in_flight: deque[Batch] = deque()
        try:
            await pipeline.start()
            app.flow_control.resume()  # Faust's consumer, switched off, would do this at its first assignment
            while not pipeline.stopping:
                batch = await pipeline.fetch()
                if batch is not None:
                    await clean.send(value=batch)
                    in_flight.append(batch)
                elif not in_flight and await pipeline.caught_up():
                    print(backfill_summary(time.monotonic() - started_at), end="", file=sys.__stdout__, flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)  # the same clean stop as an operator's
                    break
                while in_flight and (in_flight[0].done.done() or len(in_flight) >= MAX_IN_FLIGHT):
                    await in_flight.popleft().done  # raises the exception of a failed batch
            while in_flight:
                await in_flight.popleft().done
        except RetryStopped:
            log.warning("stopped while waiting for ClickHouse; the batches in flight are replayed at the next start")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await app.crash(exc)
        finally:
            stopped.set()

    @app.task  # type: ignore[untyped-decorator]
    async def tick() -> None:
        """Lag, watermark and window results: as soon as the window stage advanced the watermark (at most every
        ``publish_interval_seconds``, right after a write), else ``publish_interval_seconds`` after the previous
        tick ended. Not Faust's fixed-rate timer: a tick slower than the interval would run again at once and
        keep the ClickHouse thread from the window stage."""
        while not pipeline.stopping:
            with suppress(TimeoutError):
                await asyncio.wait_for(pipeline.results_due.wait(), settings.publish_interval_seconds)
            async with ticking:  # a stop closes the producer only between ticks
                if not pipeline.started or pipeline.stopping:
                    continue
                try:
                    await pipeline.tick()
                except RetryStopped:
                    return
                except Exception as exc:
                    await app.crash(exc)
                    return

    @app.timer(GC_FREEZE_SECONDS)  # type: ignore[untyped-decorator]
    async def freeze_heap() -> None:
        heap.tick()

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.text("ok")

    register_dashboard(app, pipeline.read_store, settings)  # /dashboard (dashboard/web.py)

    @app.on_before_shutdown.connect
    async def finish_in_flight(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """SIGTERM/SIGINT: let the consume task finish and commit the batches in flight (a batch waiting for
        ClickHouse gives up at once), then leave the group and close ClickHouse."""
        pipeline.request_stop()
        try:
            await asyncio.wait_for(stopped.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("the batches in flight did not finish in %.0f s; they are replayed at the next start",
                        STOP_TIMEOUT_SECONDS)
        async with ticking:  # a tick in progress publishes before the producer closes
            await pipeline.stop()

    @app.on_worker_init.connect
    def tune_memory(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Window state is a large heap of small long-lived objects; with the default thresholds the collector
        # walks it again and again (half of the window stage's CPU in profiles). Reference counting still frees
        # everything acyclic at once; this only makes the cycle collector run less often.
        gc.set_threshold(100_000, 50, 1000)
        limit_malloc_arenas()

    return app, pipeline


def run_worker(loglevel: str = "WARNING") -> None:
    """Run the worker app (settings from the environment, read at import) until SIGTERM/SIGINT (returns) or
    until a stage fails (raises its exception; the batches in flight are replayed by the next start). Blocks."""
    app.finalize()  # what `faust -A streams.app worker` does before it starts the worker (faust.cli.base)
    app.worker_init()
    app.worker_init_post_autodiscover()  # sends on_worker_init (tune_memory)
    worker = Worker(app, loglevel=loglevel, loop=uvloop.new_event_loop(), quiet=True)
    worker.spinner = None  # no terminal spinner: the output is logs (and a backfill's summary)
    worker.execute_from_commandline()


app, pipeline = create_app(get_settings())
