"""Vendor payload parsing (golden payloads from the vendors' docs), signature schemes, replay guard, privacy,
and the HTTP service's status codes with an in-memory publisher (the broker is tested in integration)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters import signatures as sig
from adapters.privacy import PrivacyPolicy, luhn_ok, redact
from adapters.replay_store import SqliteReplayStore, ThreadedReplayStore
from adapters.service import Message, ServiceConfig, config_from_settings, create_app, open_replay_guard
from adapters.vendors import (
    PARSERS,
    PayloadError,
    parse_chatwoot,
    parse_freshdesk,
    parse_helpscout,
    parse_intercom,
    parse_zendesk,
)
from satpulse.settings import Settings
from streams.clean import Rejected, clean

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
    assert PARSERS[vendor](case["payload"], case["event"]) == case["expected"]


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
        PARSERS[vendor](payload, None)


# --- signatures -------------------------------------------------------------------------------------------

BODY = b'{"id": 5434, "rating": "Great"}'


def zendesk_headers(secret: str, body: bytes, ts: str = "2025-06-15T15:06:40Z") -> dict[str, str]:
    return {"X-Zendesk-Webhook-Signature": sig.sign_zendesk(secret, ts, body),
            "X-Zendesk-Webhook-Signature-Timestamp": ts}


def test_signing_matches_the_documented_formulas() -> None:
    """Recomputed here with hmac/hashlib directly, as each vendor's doc states it."""
    secret = "dGhpc19zZWNyZXQ"
    assert sig.sign_zendesk(secret, "2025-06-15T15:06:40Z", BODY) == base64.b64encode(
        hmac.new(secret.encode(), b"2025-06-15T15:06:40Z" + BODY, hashlib.sha256).digest()).decode()
    assert sig.sign_intercom(secret, BODY) == "sha1=" + hmac.new(secret.encode(), BODY, hashlib.sha1).hexdigest()
    assert sig.sign_helpscout(secret, BODY) == base64.b64encode(
        hmac.new(secret.encode(), BODY, hashlib.sha1).digest()).decode()
    assert sig.sign_timestamped_sha256(secret, "1750000000", BODY) == "sha256=" + hmac.new(
        secret.encode(), b"1750000000." + BODY, hashlib.sha256).hexdigest()
    # a fixed vector, so that a change of formula fails even if both sides above changed together
    # (printf '{}' | openssl dgst -sha1 -hmac my-secret-key -binary | base64)
    assert sig.sign_helpscout("my-secret-key", b"{}") == "5gnyEE2DTK73khG7sEv6sJ1fM1U="


VERIFY_CASES = {
    "zendesk": (sig.verify_zendesk, lambda s, b: zendesk_headers(s, b)),
    "intercom": (sig.verify_intercom, lambda s, b: {"X-Hub-Signature": sig.sign_intercom(s, b)}),
    "helpscout": (sig.verify_helpscout, lambda s, b: {"X-HelpScout-Signature": sig.sign_helpscout(s, b)}),
    "chatwoot": (sig.verify_chatwoot, lambda s, b: {"X-Chatwoot-Timestamp": "1750000000",
                                                    "X-Chatwoot-Signature": sig.sign_timestamped_sha256(
                                                        s, "1750000000", b)}),
    "generic": (sig.verify_generic, lambda s, b: {"X-Satpulse-Timestamp": "1750000000",
                                                  "X-Satpulse-Signature": sig.sign_timestamped_sha256(
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


def test_zendesk_timestamp_is_signed() -> None:
    headers = zendesk_headers("s3cret", BODY)
    headers["X-Zendesk-Webhook-Signature-Timestamp"] = "2025-06-15T15:06:41Z"  # moved, signature kept
    with pytest.raises(sig.AuthError, match="bad_signature"):
        sig.verify_zendesk("s3cret", headers, BODY, NOW, 300)


def test_freshdesk_token_and_basic_auth() -> None:
    sig.verify_freshdesk("tok", None, {"X-Satpulse-Token": "tok"})
    basic = "Basic " + base64.b64encode(b"fd:pw").decode()
    sig.verify_freshdesk(None, ("fd", "pw"), {"Authorization": basic})
    for headers, reason in (({"X-Satpulse-Token": "nope"}, "bad_signature"), ({}, "missing_signature"),
                            ({"Authorization": "Basic " + base64.b64encode(b"fd:x").decode()}, "bad_signature"),
                            ({"Authorization": "Basic !!!"}, "bad_signature")):
        with pytest.raises(sig.AuthError) as exc:
            sig.verify_freshdesk("tok", ("fd", "pw"), headers)
        assert exc.value.reason == reason
    with pytest.raises(sig.AuthError, match="not_configured"):
        sig.verify_freshdesk(None, None, {"X-Satpulse-Token": "tok"})


def test_replay_guard() -> None:
    guard = sig.ReplayGuard(max_size=3, ttl_s=100)
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


def test_delivery_id_prefers_vendor_header() -> None:
    assert sig.delivery_id("chatwoot", {"X-Chatwoot-Delivery": "d-1"}, b"x") == "chatwoot:d-1"
    a = sig.delivery_id("helpscout", {"X-HelpScout-Signature": "abc"}, b"x")
    assert a == sig.delivery_id("helpscout", {"X-HelpScout-Signature": "abc"}, b"x")
    assert a != sig.delivery_id("helpscout", {"X-HelpScout-Signature": "abc"}, b"y")


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
    app = create_app(config, publisher, sig.ReplayGuard(), clock=lambda: NOW)
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
    return ("/webhooks/helpscout", body, {"X-HelpScout-Signature": sig.sign_helpscout(secret, body),
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
                                                 "bad_payload", "bad_payload", "too_large", "not_configured"]
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
    app = create_app(config, publisher, sig.ReplayGuard(), clock=lambda: NOW)
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
        app = create_app(config, publisher, sig.ReplayGuard())
        async with TestClient(TestServer(app)) as client:
            health = await client.get("/health")
            text = await (await client.get("/metrics")).text()
            return health.status, text
    status, exposition = asyncio.run(probe())
    assert status == 200
    assert 'satpulse_ingest_requests_total{outcome="accepted",reason="ok",vendor="helpscout"}' in exposition
