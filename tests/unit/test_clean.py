import json
from pathlib import Path

import pytest

from domain.clean import REASONS, Rejected, clean, normalise_channel, parse_event_time, parse_json_object
from satpulse import codec
from satpulse.deadletter import Origin
from streams.cleaner import route

NOW = 1_800_000_000_000
TOL = 300_000


def feedback(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {"kind": "feedback", "event_id": "e1", "source": "jsonl", "channel": "Live chat",
                              "event_time": "2026-01-01T10:00:00+01:00", "rating_value": 5, "rating_scale": "1-5"}
    raw.update(overrides)
    return raw


def test_clean_feedback_normalises() -> None:
    cleaned = clean(feedback(team=" tech ", comment="ok"), NOW, TOL)
    r = cleaned.record
    assert cleaned.schema == "feedback_event" and cleaned.key == "e1"
    assert r["channel"] == "chat" and r["team"] == "tech"
    assert r["event_time"] == 1767258000000  # 09:00 UTC
    assert r["score"] == 5.0 and r["satisfied"] is True and r["native_value"] == "5"
    assert codec.decode(codec.encode(cleaned.schema, r))[1] == r


def test_comment_only_feedback_is_unrated() -> None:
    r = clean(feedback(rating_value=None, comment="where is my parcel"), NOW, TOL).record
    assert r["satisfied"] is None and r["score"] is None


def test_clean_ticket() -> None:
    cleaned = clean({"kind": "ticket", "event_id": "t1", "ticket_id": "42", "status": "First Response",
                     "source": "zendesk", "channel": "email", "event_time": 1_700_000_000, "priority": "Critical"},
                    NOW, TOL)
    assert cleaned.schema == "ticket_event" and cleaned.key == "42"
    assert cleaned.record["status"] == "first_response" and cleaned.record["priority"] == "urgent"
    assert cleaned.record["event_time"] == 1_700_000_000_000


@pytest.mark.parametrize(("raw", "reason"), [
    (feedback(event_id=None), "missing_field"),
    (feedback(event_id=" "), "missing_field"),
    (feedback(source=None), "missing_field"),
    (feedback(channel=None), "missing_field"),
    (feedback(event_time=None), "missing_field"),
    (feedback(rating_scale=None), "missing_field"),
    (feedback(rating_value=None), "missing_field"),
    (feedback(rating_version="two"), "invalid_field"),
    (feedback(rating_version=1.5), "invalid_field"),
    (feedback(rating_version=-1), "invalid_field"),
    (feedback(rating_version=True), "invalid_field"),
    (feedback(kind="survey"), "unknown_kind"),
    (feedback(rating_scale="stars"), "unknown_scale"),
    (feedback(rating_value=9), "invalid_rating"),
    (feedback(event_time="yesterday"), "bad_timestamp"),
    (feedback(event_time="2026-01-01T10:00:00", timezone="Mars/Olympus"), "bad_timestamp"),
    (feedback(event_time=-5), "bad_timestamp"),
    (feedback(event_time=NOW + TOL + 1000), "future_timestamp"),
    ({"kind": "ticket", "event_id": "t", "ticket_id": "1", "status": "escalated", "source": "s",
      "channel": "email", "event_time": 1}, "unknown_status"),
    ({"kind": "ticket", "event_id": "t", "status": "created", "source": "s", "channel": "email",
      "event_time": 1}, "missing_field"),
])
def test_rejections(raw: dict[str, object], reason: str) -> None:
    with pytest.raises(Rejected) as info:
        clean(raw, NOW, TOL)
    assert info.value.reason == reason


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"\xff\xfe", b""])
def test_unparseable(payload: bytes) -> None:
    with pytest.raises(Rejected) as info:
        parse_json_object(payload)
    assert info.value.reason == "unparseable_payload"


def test_every_reason_is_reachable_and_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "dead-letters.md").read_text()
    for reason in REASONS:
        assert f"`{reason}`" in doc


@pytest.mark.parametrize(("name", "channel"), [
    ("Social media", "social"), ("E-mail", "email"), ("Live Chat", "chat"), ("IVR", "phone"),
    ("web_survey", "web"), ("carrier pigeon", "other"), ("  PHONE ", "phone"),
])
def test_channels(name: str, channel: str) -> None:
    assert normalise_channel(name) == channel


@pytest.mark.parametrize(("value", "ms"), [
    ("2026-01-01T00:00:00Z", 1767225600000), ("2026-01-01 00:00:00", 1767225600000),
    (1767225600, 1767225600000), (1767225600000, 1767225600000), ("1767225600.5", 1767225600500),
])
def test_event_time(value: object, ms: int) -> None:
    assert parse_event_time(value) == ms


def test_naive_time_in_configured_zone() -> None:
    assert parse_event_time("2026-07-01 12:00:00", "Europe/Zurich") == parse_event_time("2026-07-01T10:00:00Z")


def test_route_dead_letter_carries_reason_and_origin() -> None:
    routed = route(b'{"kind": "feedback"}', Origin("in", 3, 42), NOW, TOL)
    assert routed.topic.endswith("deadletter.v1") and routed.reason == "missing_field"
    _, dl = codec.decode(routed.value, codec.DEAD_LETTER)
    assert (dl["origin_topic"], dl["origin_partition"], dl["origin_offset"]) == ("in", 3, 42)
    assert dl["payload"] == b'{"kind": "feedback"}' and dl["stage"] == "cleaner"


def test_route_lone_surrogate_is_dead_lettered() -> None:
    routed = route(json.dumps(feedback(comment="\ud800")).encode(), Origin("in", 0, 1), NOW, TOL)
    assert routed.reason == "unparseable_payload"


def test_route_clean_feedback() -> None:
    routed = route(json.dumps(feedback()).encode(), Origin("in", 0, 1), NOW, TOL)
    assert routed.kind == "feedback" and routed.topic.endswith("feedback.v1") and routed.key == b"e1"


def test_sentiment_is_carried_and_validated() -> None:
    r = clean(feedback(rating_value=None, comment="love it", sentiment=0.8), NOW, TOL).record
    assert r["sentiment"] == 0.8 and r["satisfied"] is None
    with pytest.raises(Rejected):
        clean(feedback(sentiment=3), NOW, TOL)
