"""HTTP ingestion service (aiohttp): helpdesk webhooks -> raw submissions -> the ingest topic.

Routes: ``POST /webhooks/{zendesk,freshdesk,intercom,helpscout,chatwoot,generic}``, ``GET /health``,
``GET /metrics`` (the satpulse.metrics registry). For each webhook request, in this order:

1. body larger than ``ingest_max_body_bytes`` (Content-Length, then the bytes actually read) -> 413
2. authentication as the vendor documents it (adapters/signatures.py) -> 401 with the reason
3. JSON and the vendor's payload shape (adapters/vendors.py) -> 400 with the reason
4. delivery already accepted (or in flight) within the replay window -> 409; accepted delivery ids are also
   written to a sqlite3 file (adapters/replay_store.py, on its own thread), so a restarted service refuses them too
5. publish every resulting submission with aiokafka's ``AIOKafkaProducer(acks="all", enable_idempotence=True)``
   and wait for the broker's acknowledgement of each -> 202 ``{"accepted": n}``; no acknowledgement within
   ``ingest_publish_timeout_seconds`` or a broker error -> 503 and the delivery id is released, so the vendor's
   retry is accepted. Nothing is answered 202 before Kafka holds it.

Each answer increments ``satpulse_ingest_requests_total{vendor, outcome, reason}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.jsonl import key_of
from adapters.privacy import PrivacyPolicy
from adapters.replay_store import SqliteReplayStore, ThreadedReplayStore
from adapters.signatures import (
    AuthError,
    ReplayGuard,
    delivery_id,
    verify_chatwoot,
    verify_freshdesk,
    verify_generic,
    verify_helpscout,
    verify_intercom,
    verify_zendesk,
)
from adapters.vendors import PARSERS, PayloadError, Submission
from satpulse import metrics, topics
from satpulse.settings import Settings

log = logging.getLogger(__name__)
STAGE = "webhook"
VENDORS: tuple[str, ...] = tuple(PARSERS)
Message = tuple[str, bytes | None, bytes]  # topic, key, value


class AsyncPublisher(Protocol):
    async def publish(self, messages: Sequence[Message]) -> None:
        """Return once the broker acknowledged every message; raise otherwise."""


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
        if self._producer is None:
            raise RuntimeError("publisher not started")
        futures = [await self._producer.send(topic, value=value, key=key) for topic, key, value in messages]
        await asyncio.gather(*futures)


Verifier = Callable[[Mapping[str, str], bytes, float], None]


@dataclass(frozen=True)
class ServiceConfig:
    verifiers: dict[str, Verifier]
    max_body_bytes: int
    publish_timeout_s: float
    privacy: PrivacyPolicy
    ingest_topic: str


def _hmac_verifier(secret: str | None, check: Callable[[str, Mapping[str, str], bytes, float, float], None],
                   tolerance_s: float) -> Verifier:
    def verify(headers: Mapping[str, str], body: bytes, now: float) -> None:
        if secret is None:
            raise AuthError("not_configured", "no secret is configured for this vendor")
        check(secret, headers, body, now, tolerance_s)
    return verify


def config_from_settings(settings: Settings) -> ServiceConfig:
    def secret(value: Any) -> str | None:
        return None if value is None else str(value.get_secret_value()) or None

    tolerance = float(settings.ingest_signature_tolerance_seconds)
    token = secret(settings.freshdesk_webhook_token)
    password = secret(settings.freshdesk_basic_password)
    basic = (settings.freshdesk_basic_user, password) if settings.freshdesk_basic_user and password else None

    def freshdesk(headers: Mapping[str, str], body: bytes, now: float) -> None:
        verify_freshdesk(token, basic, headers)

    return ServiceConfig(
        verifiers={
            "zendesk": _hmac_verifier(secret(settings.zendesk_webhook_secret), verify_zendesk, tolerance),
            "intercom": _hmac_verifier(secret(settings.intercom_client_secret), verify_intercom, tolerance),
            "helpscout": _hmac_verifier(secret(settings.helpscout_webhook_secret), verify_helpscout, tolerance),
            "chatwoot": _hmac_verifier(secret(settings.chatwoot_webhook_secret), verify_chatwoot, tolerance),
            "generic": _hmac_verifier(secret(settings.generic_webhook_secret), verify_generic, tolerance),
            "freshdesk": freshdesk,
        },
        max_body_bytes=settings.ingest_max_body_bytes,
        publish_timeout_s=settings.ingest_publish_timeout_seconds,
        privacy=PrivacyPolicy(settings.redact_personal_data, settings.pseudonymisation_key),
        ingest_topic=topics.INGEST,
    )


class _TooLarge(Exception):
    pass


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge(f"Content-Length {request.content_length} exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)


def encode_submission(submission: Submission) -> bytes:
    return json.dumps(submission, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def _answer(vendor: str, status: int, outcome: str, reason: str, **body: Any) -> web.Response:
    metrics.INGEST_REQUESTS.labels(vendor, outcome, reason).inc()
    return web.json_response({"status": outcome, "reason": reason, **body}, status=status)


def create_app(config: ServiceConfig, publisher: AsyncPublisher, guard: ReplayGuard,
               clock: Callable[[], float] = time.time,
               replay_store: ThreadedReplayStore | None = None) -> web.Application:
    """The aiohttp application. With ``replay_store``, every accepted delivery id is written there before the
    202 is sent (restore the guard from it at start). The publisher's and the store's lifecycles are the
    caller's."""

    async def webhook(request: web.Request) -> web.Response:
        vendor = request.match_info["vendor"]
        if vendor not in VENDORS:
            raise web.HTTPNotFound(text=f"unknown vendor {vendor!r}; known: {', '.join(VENDORS)}")
        started = time.perf_counter()
        try:
            return await _handle(vendor, request)
        finally:
            metrics.INGEST_REQUEST_SECONDS.labels(vendor).observe(time.perf_counter() - started)

    async def _handle(vendor: str, request: web.Request) -> web.Response:
        try:
            body = await _read_body(request, config.max_body_bytes)
        except _TooLarge as exc:
            return _answer(vendor, 413, "refused", "too_large", detail=str(exc))
        now = clock()
        try:
            config.verifiers[vendor](request.headers, body, now)
        except AuthError as exc:
            return _answer(vendor, 401, "refused", exc.reason, detail=str(exc))
        try:
            payload = json.loads(body)
            submissions = PARSERS[vendor](payload, request.headers.get("X-HelpScout-Event"))
        except (ValueError, PayloadError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return _answer(vendor, 400, "refused", "bad_payload", detail=str(exc))
        delivery = delivery_id(vendor, request.headers, body)
        if not guard.reserve(delivery, now):
            return _answer(vendor, 409, "refused", "replay", detail="delivery already accepted")
        metrics.EVENTS_IN.labels(STAGE).inc(len(submissions))
        messages = []
        for submission in submissions:
            prepared = config.privacy.apply(submission)
            messages.append((config.ingest_topic, key_of(prepared), encode_submission(prepared)))
        try:
            if messages:
                await asyncio.wait_for(publisher.publish(messages), config.publish_timeout_s)
        except Exception as exc:  # broker down, timeout: refuse, the vendor retries; nothing was confirmed
            guard.release(delivery)
            log.warning("publish failed for %s delivery: %r", vendor, exc)
            return _answer(vendor, 503, "refused", "unavailable", detail=f"Kafka did not acknowledge: {exc!r}")
        guard.commit(delivery, now)
        if replay_store is not None:
            try:
                await replay_store.add(delivery, now)
            except Exception as exc:  # sqlite3.Error, disk full: Kafka holds the events, the answer stays 202
                log.error("could not persist delivery id %s: %r", delivery, exc)
        for submission in submissions:
            metrics.EVENTS_OUT.labels(STAGE, str(submission.get("kind", "feedback"))).inc()
        return _answer(vendor, 202, "accepted", "ok", accepted=len(messages))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "vendors": list(VENDORS)})

    async def metrics_view(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.REGISTRY))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    # aiohttp's own limit is set above ours so that our 413 (with the reason, counted) answers first
    app = web.Application(client_max_size=config.max_body_bytes + 1024 * 1024)
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
