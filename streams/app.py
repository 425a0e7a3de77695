"""The Faust worker: thin agents around the pure cleaning and windowing code.

- ``clean_ingest``: raw JSON submissions -> clean feedback / ticket events (Avro) or dead letters. A batch
  is acknowledged only after the broker acknowledged every message it produced (acks=all).
- ``window_feedback``: clean feedback -> per-partition window cells in ClickHouse. A batch is acknowledged
  only after ClickHouse accepted it; while ClickHouse is down the agent waits (no new batch is taken, and
  Faust pauses fetching once its bounded stream buffer is full).
- a 1 s timer advances the watermark and publishes final windows to the gauges and the metrics topic.
- ``GET /metrics`` on the worker's web port serves the Prometheus exposition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from satpulse import codec, metrics, topics
from satpulse.deadletter import Origin, encode_dead_letter
from satpulse.settings import get_settings
from sinks.clickhouse import connect
from sinks.migrations import migrate
from sinks.window_store import WindowStore
from streams.cleaner import route
from streams.window_worker import FinalWindow, WindowWorker
from streams.windows import Windower

log = logging.getLogger(__name__)
settings = get_settings()

app = faust.App(
    settings.worker_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    web_host="127.0.0.1" if settings.kafka_bootstrap.startswith("127.") else "0.0.0.0",
    web_port=settings.worker_web_port,
    topic_partitions=settings.topic_partitions,
    producer_acks=-1,
    consumer_auto_offset_reset="earliest",
    stream_buffer_maxsize=20_000,
    broker_commit_every=10_000,
    broker_commit_interval=1.0,
    web_enabled=True,
    store="memory://",
)

ingest_topic = app.topic(topics.INGEST, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")
feedback_topic = app.topic(topics.FEEDBACK, key_type=bytes, value_type=bytes, key_serializer="raw",
                           value_serializer="raw")

# every blocking ClickHouse call runs here, one at a time (clickhouse-driver's Client is not thread-safe)
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
_window_worker: WindowWorker | None = None


def _get_window_worker() -> WindowWorker:
    """Built on the executor thread on first use: connects and migrates. Blocks."""
    global _window_worker
    if _window_worker is None:
        ch = connect(settings.clickhouse_url.get_secret_value())
        migrate(ch)
        windower = Windower(settings.dimensions, settings.window_seconds, settings.grace_seconds,
                            settings.idle_seconds)
        _window_worker = WindowWorker(windower, WindowStore(ch, topics.FEEDBACK, settings.window_seconds))
    return _window_worker


async def _in_executor(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_executor, fn, *args)


@app.agent(ingest_topic)
async def clean_ingest(stream: Any) -> None:  # faust.Stream; StreamT does not declare noack_take
    tolerance_ms = settings.future_tolerance_seconds * 1000
    async for events in stream.noack_take(5000, within=0.2):
        now_ms = int(time.time() * 1000)
        pending = []
        for event in events:
            msg = event.message
            origin = Origin(msg.topic, msg.partition, msg.offset)
            routed = route(msg.value or b"", origin, now_ms, tolerance_ms)
            if routed.reason is not None:
                metrics.DEAD_LETTERS.labels("cleaner", routed.reason).inc()
            else:
                metrics.EVENTS_OUT.labels("cleaner", routed.kind).inc()
            pending.append(await app.producer.send(routed.topic, routed.key, routed.value, None, None, None))
        metrics.EVENTS_IN.labels("cleaner").inc(len(events))
        await asyncio.gather(*pending)  # broker acknowledged every output
        for event in events:
            await stream.ack(event)


@app.agent(feedback_topic)
async def window_feedback(stream: Any) -> None:
    async for events in stream.noack_take(settings.flush_max_rows, within=settings.flush_max_age_seconds):
        items = []
        now_ms = int(time.time() * 1000)
        for event in events:
            msg = event.message
            try:
                items.append((msg.partition, msg.offset, codec.decode(msg.value or b"", codec.FEEDBACK_EVENT)[1]))
            except codec.DecodeError as exc:
                key, value = encode_dead_letter("unparseable_payload", str(exc), "window", msg.value or b"",
                                                Origin(msg.topic, msg.partition, msg.offset), now_ms)
                metrics.DEAD_LETTERS.labels("window", "unparseable_payload").inc()
                await (await app.producer.send(topics.DEAD_LETTER, key, value, None, None, None))
        metrics.EVENTS_IN.labels("window").inc(len(events))
        worker = await _in_executor(_get_window_worker)
        await _in_executor(worker.process, items, time.time())
        for event in events:
            await stream.ack(event)


def encode_final_window(window: FinalWindow, window_seconds: int, now_ms: int) -> tuple[bytes, bytes]:
    """(key, value) of a final window result for the metrics topic."""
    dimension, value, start = window.key
    agg = window.agg
    record = {
        "window_start": start, "window_seconds": window_seconds, "dimension": dimension,
        "dimension_value": value, "rated": agg.rated, "satisfied": agg.satisfied, "scored": agg.scored,
        "score_sum": agg.score_micros / 1_000_000, "csat_percent": agg.csat_percent,
        "average_score": agg.average_score, "is_final": True, "emitted_at": now_ms,
    }
    key = f"{dimension}|{value}|{start}|{window_seconds}".encode()
    return key, codec.encode(codec.WINDOW_METRIC, record)


@app.timer(interval=1.0)  # type: ignore[untyped-decorator]
async def advance_watermark() -> None:
    if _window_worker is None:
        return
    final = await _in_executor(_window_worker.tick, time.time())
    now_ms = int(time.time() * 1000)
    pending = []
    for window in final:
        key, value = encode_final_window(window, settings.window_seconds, now_ms)
        pending.append(await app.producer.send(topics.METRICS, key, value, None, None, None))
    await asyncio.gather(*pending)


@app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode's stub wants a `signal` keyword
async def _track_assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
    partitions = [tp.partition for tp in assigned if tp.topic == topics.FEEDBACK]
    worker = await _in_executor(_get_window_worker)
    await _in_executor(worker.windower.assign, partitions, time.time())


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
    partitions = [tp.partition for tp in revoked if tp.topic == topics.FEEDBACK]
    if _window_worker is not None:
        await _in_executor(_window_worker.windower.revoke, partitions)


@app.page("/metrics")
async def prometheus_metrics(web: Any, request: Any) -> Any:
    return web.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
