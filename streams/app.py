"""The Faust worker: thin agents around the pure cleaning and windowing code.

- ``clean_ingest``: raw JSON submissions -> clean feedback / ticket events (Avro) or dead letters. A batch
  is acknowledged only after the broker acknowledged every message it produced (acks=all).
- ``window_events``: clean feedback and ticket events -> per-source window cells and clean events in
  ClickHouse. A batch is acknowledged only after ClickHouse accepted it; while ClickHouse is down the agent
  waits (no new batch is taken, and Faust pauses fetching once its bounded stream buffer is full). Late events
  go to the late topic, quarantined durations to the dead-letter topic.
- a 1 s timer advances the watermark and publishes window results (current and final) to the metrics topic
  and final ones to the gauges.
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
from sinks.clickhouse import ClickHouse, connect
from sinks.migrations import migrate
from sinks.window_store import WindowStore
from streams.cleaner import route
from streams.entities import CaseRules
from streams.window_worker import Item, WindowResult, WindowWorker, retry_clickhouse
from streams.windows import Windower

log = logging.getLogger(__name__)
settings = get_settings()
(settings.work_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust's datadir (it makes one level only)

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
    datadir=str(settings.work_dir / "faust" / settings.worker_id),
)

ingest_topic = app.topic(topics.INGEST, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")
clean_topics = app.topic(topics.FEEDBACK, topics.TICKETS, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")
_KIND = {topics.FEEDBACK: (codec.FEEDBACK_EVENT, "feedback"), topics.TICKETS: (codec.TICKET_EVENT, "ticket")}

# every blocking ClickHouse call runs here, one at a time (clickhouse-driver's Client is not thread-safe)
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
_window_worker: WindowWorker | None = None


def _connect_and_migrate() -> ClickHouse:
    """Blocks until ClickHouse answers and the schema is current (retrying with back-off, logged)."""

    def attempt() -> ClickHouse:
        ch = connect(settings.clickhouse_url.get_secret_value())
        migrate(ch)
        return ch

    return retry_clickhouse("connect", attempt)


def _get_window_worker() -> WindowWorker:
    """Built on the executor thread on first use: connects and migrates. Blocks."""
    global _window_worker
    if _window_worker is None:
        ch = _connect_and_migrate()
        windower = Windower(settings.window_seconds, settings.grace_seconds, settings.idle_seconds,
                            settings.entity_horizon_seconds)
        rules = CaseRules(settings.sla_first_response_seconds, settings.sla_resolution_seconds,
                          settings.max_duration_seconds * 1000)
        store = WindowStore(ch, topics.FEEDBACK, topics.TICKETS, settings.window_seconds)
        _window_worker = WindowWorker(windower, store, settings.dimensions, rules)
    return _window_worker


async def _in_executor(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_executor, fn, *args)


async def _publish_all(messages: list[tuple[str, bytes, bytes]]) -> None:
    """Send and wait until the broker acknowledged every message. Raises on a failed send."""
    pending = [await app.producer.send(topic, key, value, None, None, None) for topic, key, value in messages]
    await asyncio.gather(*pending)


@app.agent(ingest_topic)
async def clean_ingest(stream: Any) -> None:  # faust.Stream; StreamT does not declare noack_take
    tolerance_ms = settings.future_tolerance_seconds * 1000
    async for events in stream.noack_take(5000, within=0.2):
        now_ms = int(time.time() * 1000)
        out = []
        for event in events:
            msg = event.message
            routed = route(msg.value or b"", Origin(msg.topic, msg.partition, msg.offset), now_ms, tolerance_ms)
            if routed.reason is not None:
                metrics.DEAD_LETTERS.labels("cleaner", routed.reason).inc()
            else:
                metrics.EVENTS_OUT.labels("cleaner", routed.kind).inc()
            out.append((routed.topic, routed.key, routed.value))
        metrics.EVENTS_IN.labels("cleaner").inc(len(events))
        await _publish_all(out)
        for event in events:
            await stream.ack(event)


@app.agent(clean_topics)
async def window_events(stream: Any) -> None:
    async for events in stream.noack_take(settings.flush_max_rows, within=settings.flush_max_age_seconds):
        items, out = [], []
        now_ms = int(time.time() * 1000)
        for event in events:
            msg = event.message
            schema, kind = _KIND[msg.topic]
            try:
                record = codec.decode(msg.value or b"", schema)[1]
            except codec.DecodeError as exc:
                key, value = encode_dead_letter("unparseable_payload", str(exc), "window", msg.value or b"",
                                                Origin(msg.topic, msg.partition, msg.offset), now_ms)
                metrics.DEAD_LETTERS.labels("window", "unparseable_payload").inc()
                out.append((topics.DEAD_LETTER, key, value))
                continue
            items.append(Item(msg.topic, msg.partition, msg.offset, kind, record))
        metrics.EVENTS_IN.labels("window").inc(len(events))
        worker = await _in_executor(_get_window_worker)
        result = await _in_executor(worker.process, items, time.time())
        by_position = {(e.message.topic, e.message.partition, e.message.offset): e.message.value for e in events}
        for item in result.late:
            out.append((topics.LATE, item.record["event_id"].encode(),
                        by_position[(item.topic, item.partition, item.offset)] or b""))
        for q in result.quarantined:
            origin = Origin(q.item.topic, q.item.partition, q.item.offset)
            key, value = encode_dead_letter(q.reason, q.detail, "window",
                                            by_position[(q.item.topic, q.item.partition, q.item.offset)] or b"",
                                            origin, now_ms)
            metrics.DEAD_LETTERS.labels("window", q.reason).inc()
            out.append((topics.DEAD_LETTER, key, value))
        await _publish_all(out)
        for event in events:
            await stream.ack(event)


def encode_window_result(result: WindowResult, window_seconds: int, now_ms: int) -> tuple[bytes, bytes]:
    """(key, value) of a window result for the metrics topic."""
    dimension, value, start = result.key
    agg = result.agg
    record = {
        "window_start": start, "window_seconds": window_seconds, "dimension": dimension,
        "dimension_value": value, "rated": agg.rated, "satisfied": agg.satisfied, "scored": agg.scored,
        "score_sum": agg.score_micros / 1_000_000, "csat_percent": agg.csat_percent,
        "average_score": agg.average_score, "is_final": result.is_final, "emitted_at": now_ms,
        "created": agg.created, "reopened": agg.reopened, "first_responses": agg.first_responses,
        "first_response_mean_seconds": agg.mean_first_response_seconds,
        "first_response_breaches": agg.first_response_breaches, "resolved": agg.resolved,
        "resolution_mean_seconds": agg.mean_resolution_seconds, "resolution_breaches": agg.resolution_breaches,
    }
    for q in (50, 90, 99):
        record[f"first_response_p{q}_seconds"] = agg.first_response_quantile_seconds(q / 100)
        record[f"resolution_p{q}_seconds"] = agg.resolution_quantile_seconds(q / 100)
    key = f"{dimension}|{value}|{start}|{window_seconds}".encode()
    return key, codec.encode(codec.WINDOW_METRIC, record)


@app.timer(interval=1.0)  # type: ignore[untyped-decorator]
async def advance_watermark() -> None:
    if _window_worker is None:
        return
    results = await _in_executor(_window_worker.tick, time.time())
    now_ms = int(time.time() * 1000)
    await _publish_all([(topics.METRICS, *encode_window_result(r, settings.window_seconds, now_ms))
                        for r in results])


@app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode's stub wants a `signal` keyword
async def _track_assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
    sources = [(tp.topic, tp.partition) for tp in assigned if tp.topic in _KIND]
    worker = await _in_executor(_get_window_worker)
    await _in_executor(worker.windower.assign, sources, time.time())


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
    sources = [(tp.topic, tp.partition) for tp in revoked if tp.topic in _KIND]
    if _window_worker is not None:
        await _in_executor(_window_worker.windower.revoke, sources)


@app.page("/metrics")
async def prometheus_metrics(web: Any, request: Any) -> Any:
    return web.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
