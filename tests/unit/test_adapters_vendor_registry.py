"""The vendor registry: a vendor declared in one place (its module: parser, authentication, delivery identity) is
served by the webhook service -- signed deliveries accepted, bad signatures, stale timestamps and replays
refused -- and every registered vendor's declaration is consistent with the settings and the fixtures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters.emit import Message
from adapters.replay_guard import ReplayGuard
from adapters.service import config_from_settings, create_app
from adapters.signatures import HmacSignature, hmac_digest, utf8
from adapters.vendors.declaration import DeliveryIdentity, Submission, Vendor
from adapters.vendors.payload import as_object, make_submission, required
from adapters.vendors.registry import VENDORS, vendor_table
from satpulse import metrics
from satpulse.settings import Settings

NOW = 1_750_000_000.0
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"


# --- a vendor that exists only in this test: everything the service needs is in this declaration ------------

def parse_acme(payload: object, event: str | None) -> list[Submission]:
    body = as_object(payload, "body")
    rating_id = required(body, "id", "body")
    return [make_submission(kind="feedback", event_id=f"acme:{rating_id}", source="acme", channel="web",
                            event_time=body.get("at"), rating_value=body.get("score"), rating_scale="1-5",
                            rating_id=f"acme:{rating_id}")]


def sign_acme(secret: str, timestamp: str | None, body: bytes) -> str:
    return hmac_digest(secret, utf8(timestamp or "") + b":" + body, "sha512").hex()


ACME = Vendor(
    name="acme", parse=parse_acme,
    authentication=HmacSignature(secret_setting="acme_webhook_secret", signature_header="X-Acme-Signature",
                                 sign=sign_acme, timestamp_header="X-Acme-Timestamp", hex_signature=True),
    delivery=DeliveryIdentity(header="X-Acme-Delivery"))


class AcmeSettings(Settings):
    """A deployment's settings with the vendor's secret (a real vendor adds this field to Settings)."""

    acme_webhook_secret: SecretStr | None = None


class MemoryPublisher:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def publish(self, messages: Sequence[Message]) -> None:
        self.messages.extend(messages)


Request = tuple[str, bytes, dict[str, str]]


def post_all(settings: Settings, requests: list[Request]) -> tuple[list[tuple[int, dict[str, Any]]], MemoryPublisher]:
    publisher = MemoryPublisher()
    app = create_app(config_from_settings(settings, [*VENDORS.values(), ACME]), publisher, ReplayGuard(),
                     clock=lambda: NOW)

    async def exchange() -> list[tuple[int, dict[str, Any]]]:
        async with TestClient(TestServer(app)) as client:
            answers = []
            for path, body, headers in requests:
                response = await client.post(path, data=body, headers=headers)
                answers.append((response.status, await response.json()))
            health = await (await client.get("/health")).json()
            answers.append((200, health))
            return answers
    return asyncio.run(exchange()), publisher


def acme(body: bytes, secret: str = "acme-secret", now: float = NOW, delivery: str = "d-1") -> Request:
    return "/webhooks/acme", body, {**ACME.authentication.signed_headers(secret, body, now),
                                    "X-Acme-Delivery": delivery}


def counted(outcome: str, reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "satpulse_ingest_requests_total", {"vendor": "acme", "outcome": outcome, "reason": reason})
    return value or 0.0


def test_a_vendor_registered_in_one_place_is_served() -> None:
    rating = json.dumps({"id": 7, "score": 4, "at": "2025-06-15T15:00:00Z"}).encode()
    other = json.dumps({"id": 8, "score": 2, "at": "2025-06-15T15:00:00Z"}).encode()
    path, _, signed_for_other = acme(other, delivery="d-3")
    tampered = (path, other.replace(b'"score": 2', b'"score": 5'), signed_for_other)
    before = {key: counted(*key) for key in (("accepted", "ok"), ("refused", "bad_signature"))}
    answers, publisher = post_all(AcmeSettings(acme_webhook_secret=SecretStr("acme-secret")), [
        acme(rating),  # signed: accepted
        acme(rating),  # the same delivery again: a replay
        acme(other, secret="wrong", delivery="d-2"),  # signed with another secret
        tampered,  # the body changed after signing
        acme(other, now=NOW - 301, delivery="d-4"),  # signed too long ago
        ("/webhooks/acme", other, {"X-Acme-Delivery": "d-5"}),  # not signed
        acme(other, delivery="d-6"),  # signed: accepted
    ])
    *webhooks, (_, health) = answers
    assert [(status, answer["reason"]) for status, answer in webhooks] == [
        (202, "ok"), (409, "replay"), (401, "bad_signature"), (401, "bad_signature"), (401, "stale_timestamp"),
        (401, "missing_signature"), (202, "ok")]
    assert "acme" in health["vendors"]
    assert [(key, json.loads(value)["rating_value"]) for _, key, value in publisher.messages] == [
        (b"acme:7", 4), (b"acme:8", 2)]
    assert counted("accepted", "ok") == before["accepted", "ok"] + 2
    assert counted("refused", "bad_signature") == before["refused", "bad_signature"] + 2


def test_a_vendor_without_its_secret_refuses_everything() -> None:
    body = json.dumps({"id": 9, "score": 5}).encode()
    answers, publisher = post_all(AcmeSettings(), [acme(body)])
    assert [(status, answer["reason"]) for status, answer in answers[:-1]] == [(401, "not_configured")]
    assert publisher.messages == []


def test_a_vendor_not_registered_is_not_served() -> None:
    body = json.dumps({"id": 9, "score": 5}).encode()
    app = create_app(config_from_settings(AcmeSettings(acme_webhook_secret=SecretStr("acme-secret"))),
                     MemoryPublisher(), ReplayGuard(), clock=lambda: NOW)

    async def status() -> int:
        async with TestClient(TestServer(app)) as client:
            path, data, headers = acme(body)
            return (await client.post(path, data=data, headers=headers)).status
    assert asyncio.run(status()) == 404


def test_a_secret_setting_that_does_not_exist_is_named() -> None:
    with pytest.raises(AttributeError, match="acme_webhook_secret"):
        config_from_settings(Settings(), [ACME])


def test_two_vendors_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        vendor_table([ACME, ACME])


# --- the registered vendors --------------------------------------------------------------------------------

def test_every_registered_vendor_reads_existing_settings_and_has_fixtures() -> None:
    fixtures = {path.stem.split("_")[0] for path in FIXTURES.glob("*.json")}
    for name, vendor in VENDORS.items():
        assert vendor.name == name
        assert set(vendor.authentication.secret_settings) <= set(Settings.model_fields), name
        assert name in fixtures, f"{name} has no golden payload"
        assert len(set(vendor.header_names)) == len(vendor.header_names), name
    assert fixtures <= set(VENDORS)


@pytest.mark.parametrize("name", [n for n, v in VENDORS.items() if isinstance(v.authentication, HmacSignature)])
def test_signed_headers_verify_for_every_signing_vendor(name: str) -> None:
    """What a sender attaches (signed_headers, used by the load generator) passes the vendor's own check."""
    scheme = VENDORS[name].authentication
    assert isinstance(scheme, HmacSignature)
    headers = scheme.signed_headers("s3cret", b'{"id": 1}', NOW)
    scheme.verify("s3cret", headers, b'{"id": 1}', NOW + 10, 300)
