"""The ingestion service in-process (aiohttp test server on loopback) with the real aiokafka producer against the
local broker: every golden payload, signed as its vendor signs, is answered 202 only once its submissions are on
the ingest topic; refused requests (401, 400 -- also for bodies that are not strict JSON or too deep --, 409 for a
replay and for Intercom's retry of a notification, 413) publish nothing."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters.publisher import ensure_topics
from adapters.replay_guard import ReplayGuard
from adapters.service import KafkaAsyncPublisher, config_from_settings, create_app
from adapters.vendors.registry import VENDORS
from satpulse import topics
from satpulse.settings import get_settings
from tests.integration.offline import read_topic

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
SECRETS = {name: f"{name}-it-secret" for name in VENDORS}


def signed(vendor: str, body: bytes, event: str | None, secret: str | None = None) -> dict[str, str]:
    """Signed now as the vendor's declaration signs, with a fresh delivery id where the vendor has a delivery
    header and ``event`` in its event header; Freshdesk with HTTP basic credentials (its token is unit-tested)."""
    secret = secret or SECRETS[vendor]
    declared = VENDORS[vendor]
    headers = {"Content-Type": "application/json"}
    if vendor == "freshdesk":
        headers["Authorization"] = "Basic " + base64.b64encode(f"fd:{secret}".encode()).decode()
    else:
        headers |= declared.authentication.signed_headers(secret, body, time.time())
    if declared.delivery.header:
        headers[declared.delivery.header] = uuid.uuid4().hex
    if event and declared.event_header:
        headers[declared.event_header] = event
    return headers


def consume(topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    return [(key, json.loads(value)) for key, value in read_topic(topic)]


async def exchange(topic: str, requests: list[tuple[str, bytes, dict[str, str]]]) -> list[int]:
    settings = get_settings().model_copy(update={
        **{vendor.authentication.secret_settings[0]: SecretStr(SECRETS[name]) for name, vendor in VENDORS.items()
           if name != "freshdesk"},
        "freshdesk_basic_user": "fd", "freshdesk_basic_password": SecretStr(SECRETS["freshdesk"]),
        "ingest_max_body_bytes": 64 * 1024})
    config = config_from_settings(settings)
    config = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, topic=topic))
    publisher = KafkaAsyncPublisher(settings)
    await publisher.start()
    try:
        app = create_app(config, publisher, ReplayGuard())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            statuses = []
            for path, body, headers in requests:
                response = await client.post(path, data=body, headers=headers)
                statuses.append(response.status)
            return statuses
    finally:
        await publisher.stop()


def test_webhooks_to_ingest_topic(services: None) -> None:
    topic = topics.for_namespace(f"it-wh-{uuid.uuid4().hex[:8]}").ingest
    ensure_topics(get_settings(), [topic])
    good: list[tuple[str, bytes, dict[str, str]]] = []
    expected: list[dict[str, Any]] = []
    for path in sorted(FIXTURES.glob("*.json")):
        case = json.loads(path.read_text())
        vendor = path.stem.split("_")[0]
        body = json.dumps(case["payload"]).encode()
        good.append((f"/webhooks/{vendor}", body, signed(vendor, body, case["event"])))
        expected.extend(case["expected"])
    rating = json.loads((FIXTURES / "helpscout_rating.json").read_text())["payload"]
    other = json.dumps(dict(rating, id=999_001)).encode()
    hostile = [b'{"id": 999002, "rating": NaN}', b'{"event_id": "it-x", "comment": "\\ud800"}',
               b'{"event_id": "it-y", "rating_value": 1e999}', b"[" * 1000 + b"]" * 1000]
    refused = [
        ("/webhooks/helpscout", other, signed("helpscout", other, "satisfaction.ratings", secret="wrong")),
        ("/webhooks/helpscout", other.replace(b"Great", b"Okay"), signed("helpscout", other, "satisfaction.ratings")),
        ("/webhooks/helpscout", b"[1,", signed("helpscout", b"[1,", "satisfaction.ratings")),
        ("/webhooks/zendesk", b'{"pad": "' + b"x" * 70_000 + b'"}', {}),
        *(("/webhooks/generic", body, signed("generic", body, None)) for body in hostile),
    ]
    notification = json.loads((FIXTURES / "intercom_rating_added.json").read_text())["payload"]
    retry = json.dumps(dict(notification, delivery_attempts=2)).encode()  # same notification id, new signature
    replays = [good[0], ("/webhooks/intercom", retry, signed("intercom", retry, None))]
    statuses = asyncio.run(exchange(topic, refused + good + replays))
    assert statuses == [401, 401, 400, 413, 400, 400, 400, 400] + [202] * len(good) + [409, 409]

    published = consume(topic)
    assert sorted(v["event_id"] for _, v in published) == sorted(s["event_id"] for s in expected)
    by_id = {v["event_id"]: (k, v) for k, v in published}
    for submission in expected:
        key, value = by_id[submission["event_id"]]
        assert value == submission
        entity = submission["ticket_id"] if submission.get("kind") == "ticket" else (
            submission.get("rating_id") or submission["event_id"])  # the key of the clean event it becomes
        assert key == str(entity).encode()
