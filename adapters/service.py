"""HTTP ingestion service (aiohttp): helpdesk webhooks -> raw submissions -> the ingest topic.

Routes: ``POST /webhooks/{vendor}`` for every vendor of the configuration (adapters/vendors/registry.py by
default), ``GET /health``, ``GET /metrics`` (the satpulse.metrics registry). For each webhook request, in this
order (docs/adapters.md has the status table):

1. body larger than ``ingest_max_body_bytes`` (Content-Length, then the bytes actually read) -> 413 body_too_large;
   a body stream that breaks (bad chunking, an undecodable Content-Encoding) -> 400 unreadable_body
2. authentication as the vendor declares it (adapters/vendors/<vendor>.py, adapters/signatures.py) -> 401 with
   the reason
3. the body, parsed once by :func:`parse_body`: over ``max_payload_bytes`` -> 400 too_large; not strict JSON
   (NaN, Infinity, a number beyond a double such as 1e999, a lone surrogate such as ``"\\ud800"``, not UTF-8)
   -> 400 invalid_json; deeper or larger than the limits of domain/limits.py -> 400 too_deep / too_large
4. the vendor's payload -> submissions (the vendor's parser), the privacy policy, key and encoding of each
   message (the emit path, :class:`adapters.emit.IngestEncoder`), in :func:`prepare_messages`: anything they raise
   -> 400 invalid_payload (logged once, with the exception class)
5. delivery already accepted (or in flight) within the replay window -> 409 replay; delivery ids
   (:meth:`adapters.vendors.declaration.Vendor.delivery_id`) are held with :meth:`ReplayGuard.held`, which
   releases them on any failure; accepted ids are also written to a sqlite3 file (adapters/replay_store.py, on its
   own thread), so a restarted service refuses them too
6. publish every message with aiokafka's ``AIOKafkaProducer(acks="all", enable_idempotence=True)`` and wait for
   the broker's acknowledgement of each -> 202 ``{"accepted": n}``; no acknowledgement within
   ``ingest_publish_timeout_seconds`` or any error of the publisher -> 503 unavailable, and the delivery id is
   released, so the vendor's retry is accepted. Nothing is answered 202 before Kafka holds it; a 503 does not
   promise that nothing was written (docs/adapters.md, "What a 503 means").

Steps 1-4 only read what the client sent, and every failure in them is a 4xx. One middleware answers every
refusal and counts every answer in ``satpulse_ingest_requests_total{vendor, outcome, reason}``, including an
unexpected failure of the service itself (500, outcome ``failed``, reason ``internal_error``; a bug, logged
with its traceback).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.emit import IngestEncoder, IngestMessage, Message, StageMetrics
from adapters.privacy import PrivacyPolicy
from adapters.replay_guard import Replayed, ReplayGuard
from adapters.replay_store import SqliteReplayStore, ThreadedReplayStore
from adapters.signatures import AUTH_REASONS, AuthError, Verifier
from adapters.vendors.declaration import Vendor
from adapters.vendors.payload import PayloadError
from adapters.vendors.registry import VENDORS
from domain.limits import DEFAULT_LIMITS, LIMIT_REASONS, Limits, payload_problem, value_problem
from satpulse import metrics
from satpulse.settings import Settings

log = logging.getLogger(__name__)
STAGE = "webhook"
STAGE_METRICS = StageMetrics(STAGE)


class AsyncPublisher(Protocol):
    async def publish(self, messages: Sequence[Message]) -> None:
        """Return once the broker acknowledged every message; raise otherwise (any exception: the service answers
        503). May have written some of the messages when it raises."""


class PublishError(Exception):
    """The broker refused some of a delivery's messages; ``acknowledged`` of ``total`` are on the topic."""

    def __init__(self, acknowledged: int, total: int, first: BaseException) -> None:
        super().__init__(f"{acknowledged} of {total} messages acknowledged, first error: {first!r}")
        self.acknowledged = acknowledged
        self.total = total


class KafkaAsyncPublisher:
    """aiokafka producer: idempotent, acks=all; :meth:`publish` awaits each message's acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: Any = None

    async def start(self) -> None:
        """Create and start the producer (aiokafka needs the running event loop)."""
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=2,
            client_id="satpulse-ingest",
            request_timeout_ms=int(self._settings.ingest_publish_timeout_seconds * 1000))
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, messages: Sequence[Message]) -> None:
        """Hand every message to the producer, then wait until the broker acknowledged or refused each one. Raises
        RuntimeError before :meth:`start`, what ``send`` raised (the messages handed over before may still be
        written), or :class:`PublishError` naming how many were acknowledged -- those are on the topic: messages
        are not published all-or-nothing."""
        if self._producer is None:
            raise RuntimeError("publisher not started")
        handed = [await self._producer.send(topic, value=value, key=key) for topic, key, value in messages]
        outcomes = await asyncio.gather(*handed, return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            raise PublishError(len(messages) - len(failures), len(messages), failures[0]) from failures[0]


class Endpoint(NamedTuple):
    """One vendor's route: its declaration and its authentication check with the configured secrets."""

    vendor: Vendor
    verify: Verifier


@dataclass(frozen=True)
class ServiceConfig:
    endpoints: Mapping[str, Endpoint]  # by vendor name: /webhooks/{name}
    max_body_bytes: int
    publish_timeout_s: float
    encoder: IngestEncoder  # privacy policy, key, encoding, ingest topic
    limits: Limits = DEFAULT_LIMITS


def config_from_settings(settings: Settings, vendors: Iterable[Vendor] = VENDORS.values()) -> ServiceConfig:
    """The service's configuration: a route for each of ``vendors`` (the registry by default) with its secrets
    from ``settings``. Raises AttributeError naming a vendor's secret setting that Settings does not have."""
    tolerance = float(settings.ingest_signature_tolerance_seconds)
    return ServiceConfig(
        endpoints={vendor.name: Endpoint(vendor, vendor.authentication.verifier(settings, tolerance))
                   for vendor in vendors},
        max_body_bytes=settings.ingest_max_body_bytes,
        publish_timeout_s=settings.ingest_publish_timeout_seconds,
        encoder=IngestEncoder(PrivacyPolicy(settings.redact_personal_data, settings.pseudonymisation_key)),
        limits=settings.input_limits(),
    )


# every reason a webhook request is refused for, with its status: one reason, one status, so the reason label of
# satpulse_ingest_requests_total tells the status too
REFUSAL_STATUS: dict[str, int] = {
    "body_too_large": 413, "unreadable_body": 400, **dict.fromkeys(AUTH_REASONS, 401),
    **dict.fromkeys(LIMIT_REASONS, 400), "invalid_json": 400, "invalid_payload": 400, "replay": 409,
    "unavailable": 503,
}


class Refusal(Exception):
    """A webhook request that is not accepted, for ``reason`` (a key of :data:`REFUSAL_STATUS`, which gives
    ``status``; KeyError for any other); ``detail`` is the explanation for the sender."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = REFUSAL_STATUS[reason]
        self.reason = reason
        self.detail = detail


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body. Raises :class:`Refusal`: 413 body_too_large past ``limit`` bytes (Content-Length, then the
    bytes read), 400 unreadable_body when reading the client's stream fails (aiohttp's RequestPayloadError: bad
    chunking, an undecodable Content-Encoding)."""
    if request.content_length is not None and request.content_length > limit:
        raise Refusal("body_too_large", f"Content-Length {request.content_length} exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await request.content.read(65536)
        except Exception as exc:  # the client's stream: whatever breaks it is the client's
            raise Refusal("unreadable_body", f"the body cannot be read: {type(exc).__name__}") from exc
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise Refusal("body_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)


def _authenticate(verify: Verifier, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Raises :class:`Refusal` 401 with the :class:`AuthError` reason when the request is not authentic."""
    try:
        verify(headers, body, now)
    except AuthError as exc:
        raise Refusal(exc.reason, str(exc)) from exc


def parse_body(body: bytes, limits: Limits) -> Any:
    """The one parse of a webhook body: strict JSON (orjson: no NaN or Infinity, no number that overflows a
    double such as 1e999, no lone surrogate such as ``"\\ud800"``, UTF-8 only, at most 1024 levels), then the
    limits of domain/limits.py. Never recurses in Python; raises :class:`Refusal` 400 (too_large, invalid_json,
    too_deep), nothing else. Every float of the result is finite and every string encodes as UTF-8."""
    problem = payload_problem(body, limits)
    if problem is None:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Refusal("invalid_json", f"not strict JSON: {exc}") from None
        problem = value_problem(value, limits)
    if problem is not None:
        raise Refusal(*problem)
    return value


def prepare_messages(vendor: Vendor, payload: Any, event: str | None,
                     encoder: IngestEncoder) -> list[IngestMessage]:
    """The vendor's submissions of ``payload`` through the emit path's encoder (privacy policy, key, strict JSON),
    each with its ``kind`` metric label. Depends on nothing but the payload (and ``event``, the vendor's event
    header), so whatever the mapping or the encoding raises -- a :class:`PayloadError` or any other exception --
    is the payload's fault: raises :class:`Refusal` 400 invalid_payload, logged once with the exception class."""
    try:
        return [encoder.encode(submission) for submission in vendor.parse(payload, event)]
    except Exception as exc:
        expected = isinstance(exc, PayloadError)
        cause = exc.__cause__ if exc.__cause__ is not None else exc  # adapters.emit.Unpublishable: what it wraps
        log.warning("%s payload refused (%s): %s", vendor.name, type(cause).__name__, exc, exc_info=not expected)
        detail = str(exc) if expected else f"the payload cannot be mapped ({type(cause).__name__})"
        raise Refusal("invalid_payload", detail) from exc


async def _publish(publisher: AsyncPublisher, messages: Sequence[Message], timeout_s: float) -> None:
    """Wait for the broker's acknowledgement of every message; raises :class:`Refusal` 503 unavailable when the
    publisher raises anything or takes longer than ``timeout_s`` (some messages may have been written)."""
    if not messages:
        return
    try:
        await asyncio.wait_for(publisher.publish(messages), timeout_s)
    except Exception as exc:  # broker down, timeout: refuse, the vendor retries; nothing was confirmed
        log.warning("publish failed: %r", exc)
        raise Refusal("unavailable", f"Kafka did not acknowledge: {exc!r}") from exc


def _answer(vendor: str, status: int, outcome: str, reason: str, **body: Any) -> web.Response:
    """The answer to a webhook request; the one place that counts answers."""
    metrics.INGEST_REQUESTS.labels(vendor, outcome, reason).inc()
    return web.json_response({"status": outcome, "reason": reason, **body}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer_every_webhook(vendors: Iterable[str]) -> Middleware:
    """The middleware that turns a :class:`Refusal` into its counted answer and any other exception of a webhook
    handler of one of ``vendors`` into a counted 500 internal_error (logged with its traceback): no webhook
    request is left uncounted, and no exception reaches aiohttp. Requests to other routes, and to unknown
    vendors, pass through uncounted."""
    known = frozenset(vendors)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        vendor = request.match_info.get("vendor")
        if vendor not in known:
            return await handler(request)
        started = time.perf_counter()
        try:
            return await handler(request)
        except Refusal as refusal:
            return _answer(vendor, refusal.status, "refused", refusal.reason, detail=refusal.detail)
        except Exception:
            log.exception("unexpected failure answering a %s webhook", vendor)
            return _answer(vendor, 500, "failed", "internal_error", detail="unexpected failure of the service")
        finally:
            metrics.INGEST_REQUEST_SECONDS.labels(vendor).observe(time.perf_counter() - started)
    return middleware


def create_app(config: ServiceConfig, publisher: AsyncPublisher, guard: ReplayGuard,
               clock: Callable[[], float] = time.time,
               replay_store: ThreadedReplayStore | None = None) -> web.Application:
    """The aiohttp application. With ``replay_store``, every accepted delivery id is written there before the
    202 is sent (restore the guard from it at start). The publisher's and the store's lifecycles are the
    caller's."""

    async def webhook(request: web.Request) -> web.Response:
        """Raises :class:`Refusal` for every answer but 202 (answered by :func:`answer_every_webhook`)."""
        endpoint = config.endpoints.get(request.match_info["vendor"])
        if endpoint is None:
            raise web.HTTPNotFound(text=f"unknown vendor {request.match_info['vendor']!r}; "
                                        f"known: {', '.join(config.endpoints)}")
        vendor = endpoint.vendor
        body = await _read_body(request, config.max_body_bytes)
        now = clock()
        _authenticate(endpoint.verify, request.headers, body, now)
        payload = parse_body(body, config.limits)
        prepared = prepare_messages(vendor, payload, vendor.event(request.headers), config.encoder)
        delivery = vendor.delivery_id(request.headers, body, payload)
        try:
            with guard.held(delivery, now):  # released by construction if anything in the block raises
                STAGE_METRICS.received(len(prepared))
                await _publish(publisher, [message for message, _ in prepared], config.publish_timeout_s)
        except Replayed:
            raise Refusal("replay", "delivery already accepted") from None
        await _remember(delivery, now)
        for _, kind in prepared:
            STAGE_METRICS.passed_on(kind)
        return _answer(vendor.name, 202, "accepted", "ok", accepted=len(prepared))

    async def _remember(delivery: str, now: float) -> None:
        """Write the accepted id to the replay store; a failure is logged, the answer stays 202 (Kafka holds
        the events, and the in-memory guard still refuses the replay in this process)."""
        if replay_store is None:
            return
        try:
            await replay_store.add(delivery, now)
        except Exception as exc:  # sqlite3.Error, disk full
            log.error("could not persist delivery id %s: %r", delivery, exc)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "vendors": list(config.endpoints)})

    async def metrics_view(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.REGISTRY))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    # aiohttp's own limit is set above ours so that our 413 (with the reason, counted) answers first
    app = web.Application(client_max_size=config.max_body_bytes + 1024 * 1024,
                          middlewares=[answer_every_webhook(config.endpoints)])
    app.router.add_post("/webhooks/{vendor}", webhook)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_view)
    return app


def replay_db_path(settings: Settings) -> Path:
    return settings.ingest_replay_db or settings.work_dir / "ingest" / "replay.sqlite3"


def open_replay_guard(settings: Settings, now: float | None = None) -> tuple[ReplayGuard, ThreadedReplayStore]:
    """The replay guard restored from the delivery-id file (``ingest_replay_db``, default
    ``{work_dir}/ingest/replay.sqlite3``) and that file's store. Blocks while reading it; raises sqlite3.Error."""
    size, ttl = settings.ingest_replay_cache_size, float(settings.ingest_replay_ttl_seconds)
    store = SqliteReplayStore(replay_db_path(settings), size, ttl)
    guard = ReplayGuard(size, ttl)
    guard.restore(store.load(time.time() if now is None else now))
    return guard, ThreadedReplayStore(store)


def run_service(settings: Settings) -> None:
    """``satpulse ingest-service``: create missing topics, start the producer, serve until interrupted."""
    from adapters.publisher import ensure_topics

    ensure_topics(settings)
    publisher = KafkaAsyncPublisher(settings)
    guard, replay_store = open_replay_guard(settings)
    app = create_app(config_from_settings(settings), publisher, guard, replay_store=replay_store)

    async def start(_: web.Application) -> None:
        await publisher.start()

    async def stop(_: web.Application) -> None:
        await publisher.stop()
        replay_store.close()

    starting: list[Callable[[web.Application], Awaitable[None]]] = [start]
    app.on_startup.extend(starting)
    app.on_cleanup.append(stop)
    web.run_app(app, host=settings.ingest_host, port=settings.ingest_port, print=None,
                access_log=None)
