"""Vendor payload parsing (golden payloads from the vendors' docs), signature schemes, replay guard, privacy,
and the HTTP service's status codes with an in-memory publisher (the broker is tested in integration)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from adapters import signatures as sig
from adapters.emit import Message, encode_submission
from adapters.privacy import PrivacyPolicy, luhn_ok, redact
from adapters.replay_guard import Replayed, ReplayGuard
from adapters.replay_store import SqliteReplayStore, ThreadedReplayStore
from adapters.service import (
    REFUSAL_STATUS,
    KafkaAsyncPublisher,
    Refusal,
    ServiceConfig,
    config_from_settings,
    create_app,
    open_replay_guard,
    parse_body,
)
from adapters.vendors import helpscout, intercom, zendesk
from adapters.vendors.chatwoot import parse_chatwoot
from adapters.vendors.declaration import Vendor
from adapters.vendors.freshdesk import parse_freshdesk
from adapters.vendors.helpscout import parse_helpscout
from adapters.vendors.intercom import parse_intercom
from adapters.vendors.payload import PayloadError
from adapters.vendors.registry import VENDORS as REGISTRY
from adapters.vendors.zendesk import parse_zendesk
from domain.clean import Rejected, clean
from domain.limits import DEFAULT_LIMITS
from satpulse import metrics
from satpulse.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
GOLDEN = sorted(FIXTURES.glob("*.json"))
NOW = 1_750_000_000.0


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


# --- parsing ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_payloads(path: Path) -> None:
    case = json.loads(path.read_text())
    vendor = path.stem.split("_")[0]
    assert case.get("doc")
    assert REGISTRY[vendor].parse(case["payload"], case["event"]) == case["expected"]


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_submissions_are_accepted_by_the_cleaner(path: Path) -> None:
    """Every submission an adapter emits from a documented payload is clean, except the one documented defect."""
    case = json.loads(path.read_text())
    for submission in case["expected"]:
        if submission["event_time"] == "2015-08-28T011:08:16Z":  # Freshdesk's doc example has a malformed time
            with pytest.raises(Rejected, match="bad_timestamp"):
                clean(submission, 10**13, 300_000)
            continue
        clean(submission, 10**13, 300_000)


def test_expected_values_from_the_docs() -> None:
    """Hand-written expectations, independent of the stored golden output."""
    [great] = parse_helpscout(load("helpscout_rating")["payload"], "satisfaction.ratings")
    assert (great["rating_value"], great["rating_scale"], great["ticket_id"], great["comment"]) == (
        "great", "helpscout", "1560011", "he was really helpful")
    [rating] = parse_intercom(load("intercom_rating_added")["payload"])
    assert (rating["rating_value"], rating["rating_scale"], rating["comment"], rating["rating_id"]) == (
        5, "1-5", "Super quick, thanks!", "intercom:147")
    ratings = parse_zendesk(load("zendesk_satisfaction_ratings")["payload"])
    assert [(r["ticket_id"], r["rating_value"]) for r in ratings] == [("208", "good"), ("209", "good")]
    [csat] = parse_chatwoot(load("chatwoot_csat_response")["payload"])
    assert (csat["rating_value"], csat["comment"], csat["ticket_id"]) == (4, "Solved on the first try", "318")


def test_helpscout_bad_maps_to_not_good_and_report_codes() -> None:
    body = dict(load("helpscout_rating")["payload"], rating="Bad")
    assert parse_helpscout(body, "satisfaction.ratings")[0]["rating_value"] == "notgood"
    with pytest.raises(PayloadError, match="not a Help Scout rating"):
        parse_helpscout(dict(body, rating="Superb"), "satisfaction.ratings")


def test_rating_edit_gets_a_newer_version() -> None:
    body = load("intercom_rating_added")["payload"]
    first = parse_intercom(body)[0]
    edited = json.loads(json.dumps(body))
    edited["created_at"] += 60
    edited["data"]["item"]["conversation_rating"]["rating"] = 2
    second = parse_intercom(edited)[0]
    assert first["rating_id"] == second["rating_id"] and second["rating_version"] > first["rating_version"]
    assert first["event_id"] != second["event_id"]


def test_zendesk_status_mapping() -> None:
    body = load("zendesk_ticket_status_changed")["payload"]
    reopened = dict(body, event={"current": "OPEN", "previous": "SOLVED"})
    assert parse_zendesk(reopened)[0]["status"] == "reopened"
    pending = dict(body, event={"current": "PENDING", "previous": "OPEN"})
    assert parse_zendesk(pending) == []
    assert parse_zendesk({"type": "zen:event-type:user.active_changed", "detail": {}}) == []


def test_zendesk_survey_response_from_the_docs() -> None:
    """Zendesk's List Survey Responses example: rating 1 'bad' on a question sent without its options -> good/bad
    from rating_category; the open-ended answer is the comment; the closed-ended reason and the skip are dropped."""
    [response] = parse_zendesk(load("zendesk_survey_responses")["payload"])
    assert (response["ticket_id"], response["rating_value"], response["rating_scale"], response["customer_id"]) == (
        "99", "bad", "good_bad", "4398080151295")
    assert response["comment"] == "I had to repeatedly answer the same questions."
    assert response["rating_id"] == "zendesk:survey:01J1WB51MG6HXTYWE6Q0C93RNW"
    assert "secondary_ratings" not in response
    cleaned = clean(response, 10**13, 300_000).record
    assert (cleaned["satisfied"], cleaned["score"], cleaned["event_time"]) == (False, None, 1_723_636_800_000)


def test_zendesk_survey_response_scale_from_options_and_secondary_question() -> None:
    [response] = parse_zendesk(load("zendesk_survey_response_edited")["payload"])
    assert (response["rating_value"], response["rating_scale"]) == (4, "1-5")  # 5 options: the numeric scale
    assert response["rating_version"] == 1_723_714_200  # the edited answer's updated_at, not created_at
    assert response["secondary_ratings"] == [
        {"question_id": "01J1WBE8QR0YQVE373K2JDJR1A", "rating_value": 2, "rating_scale": "1-3"}]
    cleaned = clean(response, 10**13, 300_000).record
    assert (cleaned["score"], cleaned["satisfied"], cleaned["native_value"]) == (4.0, True, "4")
    assert "secondary_ratings" not in cleaned  # never part of the clean event, so never part of CSAT


@pytest.mark.parametrize(("options", "rating", "category", "expected"), [
    (2, 2, "good", ("good", "good_bad")),  # a 2-point scale is good/bad
    (2, 1, "bad", ("bad", "good_bad")),
    (3, 2, "neutral", (2, "1-3")),
    (5, 3, "neutral", (3, "1-5")),
    (0, 3, "neutral", ("bad", "good_bad")),  # options unknown: neutral reads as not satisfied, as Zendesk reads it
    (0, 5, "good", ("good", "good_bad")),
])
def test_zendesk_survey_scales(options: int, rating: int, category: str, expected: tuple[object, str]) -> None:
    question: dict[str, Any] = {"id": "q", "sub_type": "customer_satisfaction", "type": "rating_scale_numeric"}
    if options:
        question["options"] = [{"rating": r, "label": {"type": "static", "value": str(r)}}
                               for r in range(1, options + 1)]
    body = {"survey_response": {"id": "r1", "subjects": [{"id": "7", "type": "ticket", "zrn": "zen:ticket:7"}],
                                "answers": [{"type": "rating_scale", "rating": rating, "rating_category": category,
                                             "question": question, "updated_at": "2024-08-14T12:00:00Z"}]}}
    [response] = parse_zendesk(body)
    assert (response["rating_value"], response["rating_scale"]) == expected
    clean(response, 10**13, 300_000)


def test_zendesk_survey_response_skipped_csat() -> None:
    question = {"id": "q", "type": "rating_scale_numeric", "sub_type": "customer_satisfaction"}
    skipped = {"type": "skipped", "question": question, "updated_at": "2024-08-14T12:00:00Z"}
    comment = {"type": "open_ended", "value": "no rating, just words", "question": {"id": "c", "type": "open_ended"},
               "updated_at": "2024-08-14T12:05:00Z"}
    base = {"id": "r2", "subject_zrns": ["zen:conversation:4295a81b"], "answers": [skipped]}
    assert parse_zendesk({"survey_response": base}) == []  # nothing answered: nothing to count
    [only_comment] = parse_zendesk({"survey_response": dict(base, answers=[skipped, comment])})
    assert "rating_value" not in only_comment and only_comment["comment"] == "no rating, just words"
    assert (only_comment["channel"], only_comment["ticket_id"]) == ("chat", "4295a81b")
    assert only_comment["event_time"] == "2024-08-14T12:05:00Z"
    with pytest.raises(PayloadError, match="rating_category"):
        parse_zendesk({"survey_response": dict(base, answers=[dict(skipped, type="rating_scale", rating=9)])})
    with pytest.raises(PayloadError, match="answers must be a list"):
        parse_zendesk({"survey_responses": [{"id": "r3"}]})


def test_freshdesk_custom_questions_stay_out_of_the_csat_rating() -> None:
    [rating] = parse_freshdesk(load("freshdesk_rating_custom_questions")["payload"])
    assert (rating["rating_value"], rating["rating_scale"]) == (102, "freshdesk")  # default_question only
    assert [(q["question_id"], q["rating_value"]) for q in rating["secondary_ratings"]] == [
        ("question_1870000007", -101), ("question_1870000008", 103)]
    cleaned = clean(rating, 10**13, 300_000).record
    assert cleaned["native_value"] == "102" and cleaned["satisfied"] is True
    # the other questions are kept as secondary answers, normalised, outside the rating itself
    assert [(a["question_id"], a["native_value"], a["satisfied"]) for a in cleaned["secondary_answers"]] == [
        ("question_1870000007", "-101", False), ("question_1870000008", "103", True)]
    [plain] = parse_freshdesk({"id": 5, "ratings": {"default_question": -103}, "created_at": "2026-01-01T00:00:00Z"})
    assert "secondary_ratings" not in plain


@pytest.mark.parametrize(("vendor", "payload", "match"), [
    ("zendesk", {"hello": 1}, "zen:event-type"),
    ("zendesk", {"satisfaction_rating": {"id": 1}}, "score is required"),
    ("intercom", {"type": "something"}, "notification_event"),
    ("intercom", {"type": "notification_event", "topic": "conversation.rating.added", "data": {"item": {"id": 1}}},
     "conversation_rating"),
    ("freshdesk", {"ratings": {"question_2": 101}, "id": 1}, "default_question"),
    ("chatwoot", {"id": 1}, "event is required"),
    ("generic", [], "non-empty"),
    ("generic", [{"source": "x"}], "event_id"),
    ("helpscout", [1, 2], "JSON object"),
])
def test_malformed_payloads_raise(vendor: str, payload: object, match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        REGISTRY[vendor].parse(payload, None)


# --- signatures -------------------------------------------------------------------------------------------

BODY = b'{"id": 5434, "rating": "Great"}'


def zendesk_headers(secret: str, body: bytes, ts: str = "2025-06-15T15:06:40Z") -> dict[str, str]:
    return {"X-Zendesk-Webhook-Signature": zendesk.sign(secret, ts, body),
            "X-Zendesk-Webhook-Signature-Timestamp": ts}


def test_signing_matches_the_documented_formulas() -> None:
    """Recomputed here with hmac/hashlib directly, as each vendor's doc states it."""
    secret = "dGhpc19zZWNyZXQ"
    assert zendesk.sign(secret, "2025-06-15T15:06:40Z", BODY) == base64.b64encode(
        hmac.new(secret.encode(), b"2025-06-15T15:06:40Z" + BODY, hashlib.sha256).digest()).decode()
    assert intercom.sign(secret, None, BODY) == "sha1=" + hmac.new(secret.encode(), BODY, hashlib.sha1).hexdigest()
    assert helpscout.sign(secret, None, BODY) == base64.b64encode(
        hmac.new(secret.encode(), BODY, hashlib.sha1).digest()).decode()
    assert sig.sign_timestamp_dot_body_sha256(secret, "1750000000", BODY) == "sha256=" + hmac.new(
        secret.encode(), b"1750000000." + BODY, hashlib.sha256).hexdigest()
    # a fixed vector, so that a change of formula fails even if both sides above changed together
    # (printf '{}' | openssl dgst -sha1 -hmac my-secret-key -binary | base64)
    assert helpscout.sign("my-secret-key", None, b"{}") == "5gnyEE2DTK73khG7sEv6sJ1fM1U="


def hmac_scheme(vendor: str) -> sig.HmacSignature:
    scheme = REGISTRY[vendor].authentication
    assert isinstance(scheme, sig.HmacSignature)
    return scheme


def token_scheme(vendor: str) -> sig.TokenOrBasicAuth:
    scheme = REGISTRY[vendor].authentication
    assert isinstance(scheme, sig.TokenOrBasicAuth)
    return scheme

VERIFY_CASES = {
    "zendesk": (hmac_scheme("zendesk").verify, lambda s, b: zendesk_headers(s, b)),
    "intercom": (hmac_scheme("intercom").verify, lambda s, b: {"X-Hub-Signature": intercom.sign(s, None, b)}),
    "helpscout": (hmac_scheme("helpscout").verify, lambda s, b: {"X-HelpScout-Signature": helpscout.sign(s, None, b)}),
    "chatwoot": (hmac_scheme("chatwoot").verify, lambda s, b: {"X-Chatwoot-Timestamp": "1750000000",
                                                    "X-Chatwoot-Signature": sig.sign_timestamp_dot_body_sha256(
                                                        s, "1750000000", b)}),
    "generic": (hmac_scheme("generic").verify, lambda s, b: {"X-Satpulse-Timestamp": "1750000000",
                                                  "X-Satpulse-Signature": sig.sign_timestamp_dot_body_sha256(
                                                      s, "1750000000", b)}),
}


@pytest.mark.parametrize("vendor", VERIFY_CASES)
def test_signature_valid_tampered_wrong_secret_missing(vendor: str) -> None:
    verify, headers_for = VERIFY_CASES[vendor]
    headers = headers_for("s3cret", BODY)
    verify("s3cret", headers, BODY, NOW, 300)
    with pytest.raises(sig.AuthError) as tampered:
        verify("s3cret", headers, BODY.replace(b"Great", b"Okay!"), NOW, 300)
    assert tampered.value.reason == "bad_signature"
    with pytest.raises(sig.AuthError) as wrong:
        verify("other", headers, BODY, NOW, 300)
    assert wrong.value.reason == "bad_signature"
    with pytest.raises(sig.AuthError) as missing:
        verify("s3cret", {}, BODY, NOW, 300)
    assert missing.value.reason == "missing_signature"


@pytest.mark.parametrize("vendor", ["zendesk", "chatwoot", "generic"])
def test_stale_timestamp_refused(vendor: str) -> None:
    verify, headers_for = VERIFY_CASES[vendor]
    headers = headers_for("s3cret", BODY)
    verify("s3cret", headers, BODY, NOW + 299, 300)
    for skew in (301, -301):
        with pytest.raises(sig.AuthError) as stale:
            verify("s3cret", headers, BODY, NOW + skew, 300)
        assert stale.value.reason == "stale_timestamp"


def test_absurd_signed_timestamps_are_bad_timestamps() -> None:
    """Signed, but beyond a float or not a date: 401 bad_timestamp, never an OverflowError."""
    for vendor, timestamp in (("chatwoot", "1" + "0" * 400), ("generic", "-" + "9" * 4000)):
        headers = VERIFY_CASES[vendor][1]("s3cret", BODY)
        prefix = "Chatwoot" if vendor == "chatwoot" else "Satpulse"
        headers |= {f"X-{prefix}-Timestamp": timestamp,
                    f"X-{prefix}-Signature": sig.sign_timestamp_dot_body_sha256("s3cret", timestamp, BODY)}
        with pytest.raises(sig.AuthError, match="bad_timestamp"):
            VERIFY_CASES[vendor][0]("s3cret", headers, BODY, NOW, 300)
    headers = zendesk_headers("s3cret", BODY, ts="2025-02-30T00:00:00Z")
    with pytest.raises(sig.AuthError, match="bad_timestamp"):
        hmac_scheme("zendesk").verify("s3cret", headers, BODY, NOW, 300)


def test_zendesk_timestamp_is_signed() -> None:
    headers = zendesk_headers("s3cret", BODY)
    headers["X-Zendesk-Webhook-Signature-Timestamp"] = "2025-06-15T15:06:41Z"  # moved, signature kept
    with pytest.raises(sig.AuthError, match="bad_signature"):
        hmac_scheme("zendesk").verify("s3cret", headers, BODY, NOW, 300)


def test_freshdesk_token_and_basic_auth() -> None:
    token_scheme("freshdesk").verify("tok", None, {"X-Satpulse-Token": "tok"})
    basic = "Basic " + base64.b64encode(b"fd:pw").decode()
    token_scheme("freshdesk").verify(None, ("fd", "pw"), {"Authorization": basic})
    for headers, reason in (({"X-Satpulse-Token": "nope"}, "bad_signature"), ({}, "missing_signature"),
                            ({"Authorization": "Basic " + base64.b64encode(b"fd:x").decode()}, "bad_signature"),
                            ({"Authorization": "Basic !!!"}, "bad_signature")):
        with pytest.raises(sig.AuthError) as exc:
            token_scheme("freshdesk").verify("tok", ("fd", "pw"), headers)
        assert exc.value.reason == reason
    with pytest.raises(sig.AuthError, match="not_configured"):
        token_scheme("freshdesk").verify(None, None, {"X-Satpulse-Token": "tok"})


def test_replay_guard() -> None:
    guard = ReplayGuard(max_size=3, ttl_s=100)
    assert guard.reserve("a", 0) and not guard.reserve("a", 0)  # in flight
    guard.release("a")
    assert guard.reserve("a", 1)  # a failed delivery may be retried
    guard.commit("a", 1)
    assert not guard.reserve("a", 50)  # replay within the window
    assert guard.reserve("a", 200) is True  # expired
    guard.commit("a", 200)
    for key in "bcd":
        guard.reserve(key, 201)
        guard.commit(key, 201)
    assert len(guard) == 3 and guard.reserve("a", 202)  # evicted as the oldest


def test_replay_store_is_bounded_by_size_and_ttl(tmp_path: Path) -> None:
    store = SqliteReplayStore(tmp_path / "r" / "replay.sqlite3", max_size=3, ttl_s=100)
    store.PRUNE_EVERY = 2  # type: ignore[misc]
    for at, key in enumerate("abcde"):
        store.add(key, float(at))
        assert len(store) <= 3 + store.PRUNE_EVERY
    assert len(store) == 4  # the 4th add pruned to 3 rows (every 2nd add prunes), the 5th added one
    assert [k for k, _ in store.load(4.0)] == ["c", "d", "e"] and len(store) == 3  # exact on load, oldest first
    store.add("c", 50.0)  # the same id again: one row, newer time
    assert store.load(50.0) == [("d", 3.0), ("e", 4.0), ("c", 50.0)]
    assert store.load(104.5) == [("c", 50.0)]  # d and e are older than the TTL
    store.close()
    reopened = SqliteReplayStore(tmp_path / "r" / "replay.sqlite3", max_size=3, ttl_s=100)
    assert reopened.load(104.5) == [("c", 50.0)]
    reopened.close()


def test_threaded_store_commits_concurrent_adds_and_reports_failures(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, str]:
        store = ThreadedReplayStore(SqliteReplayStore(tmp_path / "replay.sqlite3", max_size=1000, ttl_s=100))
        await asyncio.gather(*(store.add(f"id-{i}", 1.0) for i in range(200)))  # queued together, batched
        committed = len(store.store.load(2.0))
        store.store.close()  # the file is gone from under the writer: every waiter gets the error
        with pytest.raises(sqlite3.ProgrammingError) as failed:
            await asyncio.gather(store.add("late", 2.0), store.add("later", 2.0))
        store.close()
        return committed, str(failed.value)
    committed, error = asyncio.run(scenario())
    assert committed == 200 and "closed" in error


async def _one_service_life(settings: Settings, requests: list[tuple[str, bytes, dict[str, str]]],
                            now: float) -> list[int]:
    """Start a service on the replay file of ``settings`` (as run_service does), send ``requests``, stop it."""
    guard, store = open_replay_guard(settings, now)
    with store:
        app = create_app(config_from_settings(settings), MemoryPublisher(), guard, clock=lambda: now,
                         replay_store=store)
        async with TestClient(TestServer(app)) as client:
            return [(await client.post(path, data=body, headers=headers)).status for path, body, headers in requests]


def test_replay_refused_after_a_restart(tmp_path: Path) -> None:
    settings = Settings(helpscout_webhook_secret=SecretStr("hs"), work_dir=tmp_path, ingest_replay_ttl_seconds=3600)
    rating = helpscout_request(json.dumps(load("helpscout_rating")["payload"]).encode())
    other = helpscout_request(json.dumps(dict(load("helpscout_rating")["payload"], id=77)).encode())
    assert asyncio.run(_one_service_life(settings, [rating], NOW)) == [202]
    assert (tmp_path / "ingest" / "replay.sqlite3").exists()
    # a new guard, store and app on the same file: the replay is refused, a new delivery accepted
    assert asyncio.run(_one_service_life(settings, [rating, other], NOW + 60)) == [409, 202]
    # past the TTL the id is forgotten, as the in-memory guard forgets it
    assert asyncio.run(_one_service_life(settings, [rating], NOW + 3600 + 61)) == [202]


def test_replay_store_failure_keeps_the_202(tmp_path: Path) -> None:
    """Kafka already holds the events when the id is written: a failed write is logged, not turned into an error,
    and the in-memory guard still refuses the replay in this process."""
    settings = Settings(helpscout_webhook_secret=SecretStr("hs"), work_dir=tmp_path)
    rating = helpscout_request(json.dumps(load("helpscout_rating")["payload"]).encode())

    async def scenario() -> list[int]:
        guard, store = open_replay_guard(settings, NOW)
        store.store.close()
        app = create_app(config_from_settings(settings), MemoryPublisher(), guard, clock=lambda: NOW,
                         replay_store=store)
        async with TestClient(TestServer(app)) as client:
            return [(await client.post(path, data=body, headers=h)).status for path, body, h in [rating, rating]]
    assert asyncio.run(scenario()) == [202, 409]


def test_delivery_identity_of_each_vendor() -> None:
    """The vendor's own delivery id where it has one (a header, or Intercom's notification id in the signed
    body), else a digest of the signed timestamp and the body; only the vendor's own header counts."""
    assert REGISTRY["chatwoot"].delivery_id({"X-Chatwoot-Delivery": "d-1"}, b"x", None) == "chatwoot:d-1"
    assert REGISTRY["zendesk"].delivery_id({"X-Zendesk-Webhook-Invocation-Id": "inv-9"}, b"x", None) == "zendesk:inv-9"
    assert REGISTRY["generic"].delivery_id({"X-Satpulse-Delivery": "g-1"}, b"x", None) == "generic:g-1"
    notification = {"type": "notification_event", "id": "notif_1", "delivery_attempts": 1}
    assert REGISTRY["intercom"].delivery_id({}, b"x", notification) == "intercom:notif_1"
    assert REGISTRY["intercom"].delivery_id({}, b"y", dict(notification, delivery_attempts=2)) == "intercom:notif_1"
    # without the vendor's id: an exact replay repeats the body (and the signed timestamp)
    a = REGISTRY["helpscout"].delivery_id({"X-HelpScout-Signature": "abc"}, b"x", {})
    assert a == REGISTRY["helpscout"].delivery_id({"X-HelpScout-Signature": "abc"}, b"x", {})
    assert a != REGISTRY["helpscout"].delivery_id({"X-HelpScout-Signature": "abc"}, b"y", {})
    assert a == REGISTRY["helpscout"].delivery_id({"X-Satpulse-Delivery": "chosen-by-the-sender"}, b"x", {})
    assert REGISTRY["intercom"].delivery_id({}, b"x", {"id": 5}) == REGISTRY["intercom"].delivery_id({}, b"x", [])
    stamped = REGISTRY["chatwoot"].delivery_id({"X-Chatwoot-Timestamp": "1"}, b"x", {})
    assert stamped != REGISTRY["chatwoot"].delivery_id({"X-Chatwoot-Timestamp": "2"}, b"x", {})


# --- privacy ----------------------------------------------------------------------------------------------

def test_redaction() -> None:
    text = ("mail me at jane.doe+x@example.co.uk or call +41 44 668 18 00, card 4111 1111 1111 1111, "
            "order 1234567890123 on 2024-05-02, rated 4.5")
    assert redact(text) == ("mail me at [email] or call [phone], card [card], order [phone] on 2024-05-02, "
                            "rated 4.5")
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert redact("nothing here") == "nothing here"


def test_pseudonymisation_is_keyed_and_stable() -> None:
    policy = PrivacyPolicy(redact=False, key=SecretStr("k1"))
    a = policy.apply({"customer_id": "c@example.com", "comment": "x@y.com"})
    assert a["customer_id"] == hmac.new(b"k1", b"c@example.com", hashlib.sha256).hexdigest()
    assert a["comment"] == "x@y.com"
    assert PrivacyPolicy(key=SecretStr("k2")).apply({"customer_id": "c@example.com"})["customer_id"] != a["customer_id"]
    assert PrivacyPolicy().apply({"customer_id": "c"}) == {"customer_id": "c"}


# --- service (in-memory publisher) ------------------------------------------------------------------------

class MemoryPublisher:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[Message] = []
        self.fail = fail

    async def publish(self, messages: Sequence[Message]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.messages.extend(messages)


def service_config(**overrides: Any) -> ServiceConfig:
    settings = Settings(helpscout_webhook_secret=SecretStr("hs"), zendesk_webhook_secret=SecretStr("zd"),
                        ingest_max_body_bytes=4096, **overrides)
    return config_from_settings(settings)


async def _exchange(config: ServiceConfig, publisher: MemoryPublisher,
                    requests: list[tuple[str, bytes, dict[str, str]]]) -> list[tuple[int, dict[str, Any]]]:
    app = create_app(config, publisher, ReplayGuard(), clock=lambda: NOW)
    async with TestClient(TestServer(app)) as client:
        out = []
        for path, body, headers in requests:
            response = await client.post(path, data=body, headers=headers)
            out.append((response.status, await response.json()))
        return out


def run(config: ServiceConfig, publisher: MemoryPublisher,
        requests: list[tuple[str, bytes, dict[str, str]]]) -> list[tuple[int, dict[str, Any]]]:
    return asyncio.run(_exchange(config, publisher, requests))


def helpscout_request(body: bytes, secret: str = "hs") -> tuple[str, bytes, dict[str, str]]:
    return ("/webhooks/helpscout", body, {"X-HelpScout-Signature": helpscout.sign(secret, None, body),
                                          "X-HelpScout-Event": "satisfaction.ratings"})


def test_service_status_codes() -> None:
    rating = json.dumps(load("helpscout_rating")["payload"]).encode()
    publisher = MemoryPublisher()
    answers = run(service_config(), publisher, [
        helpscout_request(rating),  # 202
        helpscout_request(rating),  # replay: 409
        helpscout_request(rating, secret="wrong"),  # 401
        ("/webhooks/helpscout", rating, {}),  # 401 missing
        helpscout_request(b"{not json"),  # 400
        helpscout_request(json.dumps({"rating": "Superb", "id": 1}).encode()),  # 400
        helpscout_request(b"{" + b" " * 5000 + b"}"),  # 413
        ("/webhooks/intercom", b"{}", {"X-Hub-Signature": "sha1=00"}),  # 401 not configured
    ])
    assert [status for status, _ in answers] == [202, 409, 401, 401, 400, 400, 413, 401]
    assert [a["reason"] for _, a in answers] == ["ok", "replay", "bad_signature", "missing_signature",
                                                 "invalid_json", "invalid_payload", "body_too_large", "not_configured"]
    assert answers[0][1]["accepted"] == 1
    assert "not a Help Scout rating" in answers[5][1]["detail"]
    [(topic, key, value)] = publisher.messages
    assert key == b"helpscout:5434" and json.loads(value)["rating_id"] == "helpscout:5434"
    assert json.loads(value)["rating_value"] == "great"
    assert topic.endswith(".ingest.v1")


def test_service_refuses_with_503_and_allows_retry_when_kafka_fails() -> None:
    rating = json.dumps(load("helpscout_rating")["payload"]).encode()
    config = service_config()
    failing = MemoryPublisher(fail=True)
    app_answers = asyncio.run(_retry_after_failure(config, failing, rating))
    assert app_answers == [503, 202]


async def _retry_after_failure(config: ServiceConfig, publisher: MemoryPublisher, body: bytes) -> list[int]:
    app = create_app(config, publisher, ReplayGuard(), clock=lambda: NOW)
    async with TestClient(TestServer(app)) as client:
        path, data, headers = helpscout_request(body)
        first = await client.post(path, data=data, headers=headers)
        publisher.fail = False
        second = await client.post(path, data=data, headers=headers)
        return [first.status, second.status]


def test_service_applies_privacy_and_serves_health_and_metrics() -> None:
    payload = dict(load("helpscout_rating")["payload"], comments="call me on +44 20 7946 0958")
    publisher = MemoryPublisher()
    config = service_config(redact_personal_data=True, pseudonymisation_key=SecretStr("pk"))
    [(status, _)] = run(config, publisher, [helpscout_request(json.dumps(payload).encode())])
    assert status == 202
    published = json.loads(publisher.messages[0][2])
    assert published["comment"] == "call me on [phone]"
    assert published["customer_id"] == hmac.new(b"pk", b"449379", hashlib.sha256).hexdigest()

    async def probe() -> tuple[int, str]:
        app = create_app(config, publisher, ReplayGuard())
        async with TestClient(TestServer(app)) as client:
            health = await client.get("/health")
            text = await (await client.get("/metrics")).text()
            return health.status, text
    status, exposition = asyncio.run(probe())
    assert status == 200
    assert 'satpulse_ingest_requests_total{outcome="accepted",reason="ok",vendor="helpscout"}' in exposition


# --- no 5xx for anything a client sends; replay reservations released; every answer counted (issue 14) -------

Request = tuple[str, bytes, dict[str, str]]
SECRETS = {name: f"{name}-secret" for name in REGISTRY}
VENDORS = tuple(REGISTRY)
CASES = [(path.stem.split("_")[0], json.loads(path.read_text())) for path in GOLDEN]


def every_vendor_config(vendors: Sequence[Vendor] = tuple(REGISTRY.values()), **overrides: Any) -> ServiceConfig:
    """Every vendor configured (its first secret setting from SECRETS, Freshdesk: the token); the default body and
    input limits unless overridden."""
    secrets = {vendor.authentication.secret_settings[0]: SecretStr(SECRETS[vendor.name]) for vendor in vendors}
    return config_from_settings(Settings(**secrets, **overrides), vendors)


def signed(vendor: str, body: bytes, event: str | None = None, extra: dict[str, str] | None = None) -> Request:
    """A request to ``vendor``'s route, authentic at NOW as its declaration signs (Freshdesk: its token), with
    ``event`` in the vendor's event header if it has one, and ``extra`` headers."""
    declared = REGISTRY[vendor]
    headers = declared.authentication.signed_headers(SECRETS[vendor], body, NOW)
    if event and declared.event_header:
        headers[declared.event_header] = event
    return f"/webhooks/{vendor}", body, {**headers, **(extra or {})}


def answered(vendor: str, outcome: str, reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "satpulse_ingest_requests_total", {"vendor": vendor, "outcome": outcome, "reason": reason})
    return value or 0.0


def answers_total() -> float:
    return sum(s.value for m in metrics.INGEST_REQUESTS.collect() for s in m.samples if s.name.endswith("_total"))


class LiveService:
    """The app on a loopback test server, driven from synchronous code (hypothesis runs its examples one after
    another against one server)."""

    def __init__(self, config: ServiceConfig, publisher: MemoryPublisher,
                 guard: ReplayGuard | None = None) -> None:
        self.app = create_app(config, publisher, ReplayGuard() if guard is None else guard, clock=lambda: NOW)
        self.loop = asyncio.new_event_loop()

    def __enter__(self) -> LiveService:
        async def start() -> TestClient[Any, Any]:
            client: TestClient[Any, Any] = TestClient(TestServer(self.app))
            await client.start_server()
            return client
        self.client = self.loop.run_until_complete(start())
        return self

    def post(self, request: Request) -> tuple[int, dict[str, Any]]:
        async def exchange() -> tuple[int, dict[str, Any]]:
            path, body, headers = request
            response = await self.client.post(path, data=body, headers=headers)
            return response.status, await response.json()
        return self.loop.run_until_complete(exchange())

    def __exit__(self, *exc_info: object) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


DEEP_ARRAYS = b"[" * 1000 + b"]" * 1000
DEEP_OBJECTS = b'{"a":' * 1000 + b"1" + b"}" * 1000
HOSTILE_BODIES: dict[str, tuple[bytes, str]] = {
    "1000 nested arrays": (DEEP_ARRAYS, "too_deep"),
    "1000 nested objects": (DEEP_OBJECTS, "too_deep"),
    "100000 nested arrays": (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),  # past orjson's 1024 levels
    "escaped lone surrogate": (b'{"id": 1, "comment": "\\ud800"}', "invalid_json"),
    "escaped lone low surrogate": (b'{"id": 1, "comment": "a\\udfffb"}', "invalid_json"),
    "surrogate as raw bytes": (b'{"id": 1, "comment": "\xed\xa0\x80"}', "invalid_json"),
    "not UTF-8": (b'{"id": 1, "comment": "\xff"}', "invalid_json"),
    "NaN": (b'{"id": 1, "rating": NaN}', "invalid_json"),
    "Infinity": (b'{"id": 1, "rating": Infinity}', "invalid_json"),
    "-Infinity": (b'{"id": 1, "rating": -Infinity}', "invalid_json"),
    "1e999": (b'{"id": 1, "rating": 1e999}', "invalid_json"),
    "-1e999": (b'{"id": 1, "rating": -1e999}', "invalid_json"),
    "400-digit integer": (b'{"id": 1, "rating": 1' + b"0" * 400 + b"}", "invalid_json"),
    "600 KB string field": (json.dumps({"id": 1, "comment": "x" * 600_000}).encode(), "too_large"),
    "20 000 character string field": (json.dumps({"id": 1, "comment": "x" * 20_000}).encode(), "too_large"),
    "20 001 values": (json.dumps(list(range(20_001))).encode(), "too_large"),
}


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_hostile_bodies_are_refused_with_400_by_every_vendor(name: str) -> None:
    body, reason = HOSTILE_BODIES[name]
    publisher = MemoryPublisher()
    with LiveService(every_vendor_config(), publisher) as service:
        for vendor in VENDORS:
            status, answer = service.post(signed(vendor, body, "satisfaction.ratings"))
            assert (status, answer["reason"]) == (400, reason), (vendor, answer)
            # the same request again: refused for what it is, never as a replay (no reservation was left)
            assert service.post(signed(vendor, body, "satisfaction.ratings"))[1]["reason"] == reason
    assert publisher.messages == []


def test_strict_json_details_name_the_problem() -> None:
    details = {name: HOSTILE_BODIES[name][0] for name in ("escaped lone surrogate", "1e999", "NaN")}
    problems = {}
    for name, body in details.items():
        with pytest.raises(Refusal) as refused:
            parse_body(body, DEFAULT_LIMITS)
        problems[name] = refused.value.detail
    assert "surrogate" in problems["escaped lone surrogate"] and "infinity" in problems["1e999"]
    assert problems["NaN"].startswith("not strict JSON")


def test_published_messages_are_strict_json() -> None:
    """What is published never holds NaN/Infinity: encoding refuses them (the parse already did)."""
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_submission({"event_id": "e", "score": float("nan")})
    publisher = MemoryPublisher()
    body = json.dumps({"event_id": "e-1", "rating_value": 1e308, "comment": "naïve 😀", "big": 2**63}).encode()
    [(status, _)] = run(every_vendor_config(), publisher, [signed("generic", body)])
    assert status == 202
    [(_, _, value)] = publisher.messages
    assert orjson.loads(value) == {"event_id": "e-1", "rating_value": 1e308, "comment": "naïve 😀", "big": 2**63}


def test_any_exception_of_a_vendor_parser_is_a_400_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    def broken(payload: object, event: str | None) -> list[dict[str, Any]]:
        return [{"event_id": str(1 / 0)}]
    config = every_vendor_config([dataclasses.replace(REGISTRY["generic"], parse=broken)])
    publisher = MemoryPublisher()
    with caplog.at_level("WARNING", logger="adapters.service"):
        [(status, answer)] = run(config, publisher, [signed("generic", b'{"event_id": "e"}')])
    assert (status, answer["reason"]) == (400, "invalid_payload")
    assert answer["detail"] == "the payload cannot be mapped (ZeroDivisionError)"
    [record] = [r for r in caplog.records if "ZeroDivisionError" in r.getMessage()]
    assert record.exc_info is not None and publisher.messages == []


def test_replay_reservation_is_released_after_a_400_and_a_503() -> None:
    """One delivery id (X-Satpulse-Delivery): refused for its payload, then broker down, then accepted; only a
    replay of the accepted delivery is a 409."""
    publisher = MemoryPublisher()
    bad, good = b'[{"source": "no event id"}]', b'{"event_id": "e-1"}'
    delivery = {"X-Satpulse-Delivery": "d-1"}
    with LiveService(every_vendor_config(), publisher) as service:
        assert service.post(signed("generic", bad, extra=delivery))[0] == 400
        assert service.post(signed("generic", DEEP_ARRAYS, extra=delivery))[0] == 400
        publisher.fail = True
        assert service.post(signed("generic", good, extra=delivery))[0] == 503
        publisher.fail = False
        assert service.post(signed("generic", good, extra=delivery))[0] == 202
        assert service.post(signed("generic", good, extra=delivery))[0] == 409
    assert len(publisher.messages) == 1


def test_held_releases_on_any_exception_and_commits_on_success() -> None:
    guard = ReplayGuard()
    for failure in (ValueError("bad"), asyncio.CancelledError(), KeyboardInterrupt()):
        with pytest.raises(type(failure)), guard.held("d", NOW):
            raise failure
        assert guard.reserve("d", NOW)  # released: free again
        guard.release("d")
    with guard.held("d", NOW), pytest.raises(Replayed), guard.held("d", NOW):  # in flight: a second copy
        pass
    with pytest.raises(Replayed), guard.held("d", NOW + 1):  # committed
        pass


class BrokenGuard(ReplayGuard):
    def reserve(self, key: str, now: float | None = None) -> bool:
        raise RuntimeError("a bug of the service")


def test_an_unexpected_failure_of_the_service_is_a_counted_500(caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps(load("helpscout_rating")["payload"]).encode()
    before = answered("helpscout", "failed", "internal_error")
    with LiveService(every_vendor_config(), MemoryPublisher(), BrokenGuard()) as service:
        status, answer = service.post(signed("helpscout", body, "satisfaction.ratings"))
    assert (status, answer["status"], answer["reason"]) == (500, "failed", "internal_error")
    assert "a bug of the service" not in answer["detail"]  # logged with its traceback, not sent to the client
    assert answered("helpscout", "failed", "internal_error") == before + 1
    assert any(r.exc_info for r in caplog.records if "unexpected failure" in r.getMessage())


class FlakyPublisher(MemoryPublisher):
    """Fails with an exception that is not a connection error (any publisher failure is a 503)."""

    async def publish(self, messages: Sequence[Message]) -> None:
        raise TypeError("unexpected publisher failure")


def test_every_answer_is_counted_by_outcome_and_reason() -> None:
    rating = json.dumps(load("helpscout_rating")["payload"]).encode()
    expected = [(202, "accepted", "ok"), (409, "refused", "replay"), (401, "refused", "bad_signature"),
                (400, "refused", "invalid_json"), (400, "refused", "too_deep"), (400, "refused", "invalid_payload"),
                (413, "refused", "body_too_large"), (503, "refused", "unavailable")]
    bodies = [rating, rating, b"{", DEEP_OBJECTS, b'{"rating": "Superb", "id": 1}', b"[" + b" " * 70_000 + b"]"]
    requests = [signed("helpscout", body, "satisfaction.ratings") for body in bodies]
    requests.insert(2, helpscout_request(rating, secret="wrong"))
    before = {(outcome, reason): answered("helpscout", outcome, reason) for _, outcome, reason in expected}
    config = every_vendor_config(ingest_max_body_bytes=64 * 1024)
    with LiveService(config, MemoryPublisher()) as service:
        answers = [service.post(request) for request in requests]
    with LiveService(config, FlakyPublisher()) as service:
        answers.append(service.post(signed("helpscout", rating, "satisfaction.ratings")))
    assert [(status, a["status"], a["reason"]) for status, a in answers] == expected
    for _, outcome, reason in expected:
        assert answered("helpscout", outcome, reason) == before[outcome, reason] + 1


def test_intercom_retry_with_the_same_notification_id_is_a_replay() -> None:
    """Intercom retries a notification with the same id, a new delivery_attempts and so a new signature."""
    notification = load("intercom_rating_added")["payload"]
    publisher = MemoryPublisher()
    first = json.dumps(notification).encode()
    retry = json.dumps(dict(notification, delivery_attempts=2)).encode()
    other = json.dumps(dict(notification, id="notif_other")).encode()
    with LiveService(every_vendor_config(), publisher) as service:
        statuses = [service.post(signed("intercom", body))[0] for body in (first, retry, other)]
    assert statuses == [202, 409, 202]
    assert intercom.sign(SECRETS["intercom"], None, first) != intercom.sign(SECRETS["intercom"], None, retry)


async def _raw_exchange(raw: bytes) -> bytes:
    """Send ``raw`` bytes to the service and return the first bytes of the answer."""
    app = create_app(every_vendor_config(), MemoryPublisher(), ReplayGuard(), clock=lambda: NOW)
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(raw)
        await writer.drain()
        answer = await reader.read(4096)
        writer.close()
        return answer


def test_a_body_that_cannot_be_read_is_a_400() -> None:
    """Content-Encoding: gzip with bytes that are not gzip: aiohttp raises while the body is read."""
    before = answered("generic", "refused", "unreadable_body")
    answer = asyncio.run(_raw_exchange(b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                                       b"Content-Length: 3\r\nConnection: close\r\n\r\nabc"))
    assert answer.startswith(b"HTTP/1.1 400") and b'"unreadable_body"' in answer
    assert answered("generic", "refused", "unreadable_body") == before + 1


@pytest.mark.parametrize(("vendor", "header"), [
    ("freshdesk", b"X-Satpulse-Token: \xff\xfe"), ("freshdesk", b"Authorization: Basic \xc3\xa9\xff"),
    ("helpscout", b"X-HelpScout-Signature: \xff"), ("intercom", b"X-Hub-Signature: sha1=\xff"),
    ("zendesk", b"X-Zendesk-Webhook-Signature: \xff\r\nX-Zendesk-Webhook-Signature-Timestamp: \xff"),
    ("chatwoot", b"X-Chatwoot-Signature: \xff\r\nX-Chatwoot-Timestamp: 1" + b"0" * 400),
])
def test_header_bytes_that_are_not_utf8_are_a_401(vendor: str, header: bytes) -> None:
    answer = asyncio.run(_raw_exchange(b"POST /webhooks/" + vendor.encode() + b" HTTP/1.1\r\nHost: x\r\n" + header +
                                       b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"))
    assert answer.startswith(b"HTTP/1.1 401"), answer


class FakeProducer:
    """aiokafka's send(): a future per message; the broker refuses the message numbered ``refuse``."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.handed = 0

    async def send(self, topic: str, value: bytes, key: bytes | None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.handed == self.refuse:
            future.set_exception(ConnectionError("not leader for partition"))
        else:
            future.set_result(None)
        self.handed += 1
        return future


def test_a_partial_publish_is_a_503_that_says_how_many_were_acknowledged() -> None:
    """Messages of one delivery are not published all-or-nothing: the 503 names what is on the topic."""
    publisher = KafkaAsyncPublisher(Settings())
    publisher._producer = FakeProducer(refuse=1)
    body = json.dumps([{"event_id": f"e-{i}"} for i in range(3)]).encode()

    async def scenario() -> tuple[int, dict[str, Any]]:
        app = create_app(every_vendor_config(), publisher, ReplayGuard(), clock=lambda: NOW)
        async with TestClient(TestServer(app)) as client:
            path, data, headers = signed("generic", body)
            response = await client.post(path, data=data, headers=headers)
            return response.status, await response.json()
    status, answer = asyncio.run(scenario())
    assert status == 503 and "2 of 3 messages acknowledged" in answer["detail"]
    assert "not leader for partition" in answer["detail"]


# hostile values: what a careless or malicious sender with a valid signature may put anywhere in a payload;
# STRICT_VALUES are valid strict JSON (they reach the vendor mapping), HOSTILE_VALUES also NaN, Infinity, numbers
# beyond a double and lone surrogates (refused by the parse)
CHARS = st.characters(codec=None, exclude_categories=())  # lone surrogates included
DEEP = json.loads(b"[" * 200 + b"]" * 200)  # deeper than the limit, within the json module's recursion
ODD_VALUES = ["", " ", "\x00", "9" * 400, "1e999", "NaN", "-Infinity", "1" * 5000, "x" * 17_000,
              "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2024-13-45T99:99:99Z", "1e308",
              "closed", "solved", "resolved", "open", "good", "Great", "offered", "input_csat", "ticket",
              "zen:event-type:ticket.status_changed", "conversation.rating.added", "conversation_status_changed",
              2**64 - 1, -(2**63), 1e308, -1e308, 5e-324, 1e11, -1, 0, DEEP]
STRICT_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                           st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                           st.sampled_from(ODD_VALUES))
HOSTILE_SCALARS = st.one_of(STRICT_SCALARS, st.integers(), st.floats(), st.text(CHARS, max_size=20),
                            st.sampled_from(["\ud800", "a\udfffb", 10**400, -(10**400)]))


def json_values(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(keys, children, max_size=4), max_leaves=12)


STRICT_VALUES = json_values(STRICT_SCALARS, st.text(max_size=8))
HOSTILE_VALUES = json_values(HOSTILE_SCALARS, st.text(CHARS, max_size=8))


def encoded(value: object, ascii_only: bool) -> bytes:
    """JSON text as a careless sender writes it: NaN/Infinity tokens, any integer, lone surrogates as escapes
    (``ascii_only``) or as raw bytes."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def positions(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every position inside a JSON value (object members, array elements), deepest last."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out: list[tuple[str | int, ...]] = []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(positions(child, (*prefix, key)))
    return out


def replaced(payload: object, changes: list[tuple[tuple[str | int, ...], object]]) -> object:
    """A copy of ``payload`` with each position set to its value, deepest first (so every position exists)."""
    copy = json.loads(json.dumps(payload))
    for position, value in sorted(changes, key=lambda change: -len(change[0])):
        node = copy
        for step in position[:-1]:
            node = node[step]
        node[position[-1]] = value
    return copy


@st.composite
def vendor_shaped(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A golden payload with one to three positions replaced by hostile values, and its event header."""
    _, case = draw(st.sampled_from(CASES))
    where = positions(case["payload"])
    values = HOSTILE_VALUES if draw(st.integers(0, 3)) == 0 else STRICT_VALUES  # mostly what reaches the mapping
    changes = draw(st.lists(st.tuples(st.sampled_from(where), values), min_size=1, max_size=3,
                            unique_by=lambda change: change[0]))
    return encoded(replaced(case["payload"], changes), draw(st.booleans())), case["event"]


def assert_never_5xx(service: LiveService, publisher: MemoryPublisher, body: bytes, event: str | None) -> None:
    """``body``, signed, to every vendor route: each answer is counted, has the status of its reason and is below
    500, but for a 503 while the publisher fails on purpose -- then the same request is accepted once the broker
    is back (the reservation was released)."""
    for vendor in VENDORS:
        request = signed(vendor, body, event)
        before = answers_total()
        status, answer = service.post(request)
        assert answers_total() == before + 1
        assert status < 500 or (status == 503 and publisher.fail), (vendor, status, answer)
        assert status == REFUSAL_STATUS.get(answer["reason"], 202)  # one reason, one status
        if status == 503:
            publisher.fail = False
            assert service.post(request)[0] == 202
            publisher.fail = True


PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_any_bytes_to_any_vendor_never_5xx() -> None:
    publisher = MemoryPublisher()
    with LiveService(every_vendor_config(), publisher) as service:
        @PROPERTY
        @given(body=st.binary(max_size=300), fail=st.booleans())
        def check(body: bytes, fail: bool) -> None:
            publisher.fail = fail
            assert_never_5xx(service, publisher, body, "satisfaction.ratings")
        check()


def test_any_json_value_to_any_vendor_never_5xx() -> None:
    publisher = MemoryPublisher()
    with LiveService(every_vendor_config(), publisher) as service:
        @PROPERTY
        @given(value=HOSTILE_VALUES, ascii_only=st.booleans(), event=st.sampled_from([None, "satisfaction.ratings",
                                                                                  "convo.status", "convo.created"]),
               fail=st.booleans())
        def check(value: object, ascii_only: bool, event: str | None, fail: bool) -> None:
            publisher.fail = fail
            assert_never_5xx(service, publisher, encoded(value, ascii_only), event)
        check()


def test_vendor_payloads_with_hostile_fields_never_5xx() -> None:
    publisher = MemoryPublisher()
    with LiveService(every_vendor_config(), publisher) as service:
        @PROPERTY
        @given(shaped=vendor_shaped(), fail=st.booleans())
        def check(shaped: tuple[bytes, str | None], fail: bool) -> None:
            publisher.fail = fail
            assert_never_5xx(service, publisher, *shaped)
        check()


def _strict(value: object) -> bool:
    """Every float finite and every string (and key) encodable as UTF-8, anywhere in ``value``."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return False
        if isinstance(node, str):
            try:
                node.encode()
            except UnicodeEncodeError:
                return False
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


@settings(max_examples=200, deadline=None)
@given(body=st.one_of(st.binary(max_size=200), st.builds(encoded, HOSTILE_VALUES, st.booleans())))
def test_parse_body_refuses_with_400_or_returns_strict_json(body: bytes) -> None:
    try:
        value = parse_body(body, DEFAULT_LIMITS)
    except Refusal as refusal:
        assert refusal.status == 400 and refusal.reason in ("invalid_json", "too_large", "too_deep")
    else:
        assert _strict(value)


HEADER_TEXT = st.text(CHARS, max_size=40) | st.sampled_from(["\udcff", "Basic \udcc3", "1" + "0" * 400, "sha1=é"])
HEADER_NAMES = sorted({name for vendor in REGISTRY.values() for name in vendor.header_names})


@settings(max_examples=150, deadline=None)
@given(headers=st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_TEXT), body=st.binary(max_size=50))
def test_verification_raises_only_auth_errors(headers: dict[str, str], body: bytes) -> None:
    config = every_vendor_config(freshdesk_basic_user="fd", freshdesk_basic_password=SecretStr("pw"))
    for vendor, endpoint in config.endpoints.items():
        try:
            endpoint.verify(headers, body, NOW)
        except sig.AuthError:
            pass
        else:
            pytest.fail(f"{vendor} accepted {headers!r}")
