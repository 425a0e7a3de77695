"""IVR survey records, e-mail survey replies, chat transcripts and social mentions (fixtures in
tests/fixtures/channels/) -> raw submissions; sentiment is stored as sentiment, never as a rating."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.channels import (
    ChannelError,
    is_chinese,
    parse_chat_transcript,
    parse_email,
    parse_ivr_record,
    parse_social_mention,
    read_channel_file,
    sentiment,
)
from domain.clean import Rejected, clean

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "channels"
NOW_MS = 1_900_000_000_000


def outcomes(kind: str, name: str) -> list[tuple[str, list[dict[str, object]] | None, str | None]]:
    return [(o, s, e) for o, s, e, _ in read_channel_file(kind, FIXTURES / name)]


def test_ivr_records() -> None:
    results = outcomes("ivr", "ivr_surveys.csv")
    assert [e for _, _, e in results][-1] == "call_id and started_at are required"
    by_call = {s[0]["ticket_id"]: s for _, s, _ in results if s}
    assert [(x["kind"], x.get("status"), x.get("rating_value")) for x in by_call["C-1001"]] == [
        ("ticket", "created", None), ("ticket", "first_response", None), ("ticket", "resolved", None),
        ("feedback", None, "5")]
    assert [x.get("status") for x in by_call["C-1002"]][2] == "closed"  # pressed 2: not resolved
    assert [x["event_id"] for x in by_call["C-1003"]] == ["ivr:C-1003:created"]  # '*' skipped, unanswered
    bad = by_call["C-1004"][-1]
    with pytest.raises(Rejected, match="invalid_rating"):  # key 7 on a 1-5 question: the cleaner refuses it
        clean(bad, NOW_MS, 300_000)
    for submissions in by_call.values():
        for s in submissions:
            if s is not bad:
                clean(s, NOW_MS, 300_000)
    with pytest.raises(ChannelError):
        parse_ivr_record({"call_id": "x"})


def test_email_with_survey_link_and_thread() -> None:
    [reply] = parse_email((FIXTURES / "survey_reply_link.eml").read_bytes())
    assert (reply["rating_value"], reply["ticket_id"], reply["customer_id"]) == ("4", "48213", "jane@example.com")
    assert reply["comment"] == "I clicked - quick help, but I had to call twice."  # quoted survey (rating=5) ignored
    assert reply["event_time"] == "2026-03-03T10:15:00+01:00" and reply["rating_id"] == "email:48213"
    clean(reply, NOW_MS, 300_000)


def test_email_with_rating_line_multipart_and_references() -> None:
    [reply] = parse_email((FIXTURES / "survey_reply_text.eml").read_bytes())
    assert (reply["rating_value"], reply["ticket_id"]) == ("2", "7731")  # ticket from In-Reply-To <case_7731@...>
    assert reply["comment"] == "Nobody told me the parcel was lost. Call me on +44 20 7946 0958."
    clean(reply, NOW_MS, 300_000)


def test_email_without_rating_or_text_and_without_headers() -> None:
    with pytest.raises(ChannelError, match="Message-ID and Date"):
        parse_email(b"Subject: x\n\nRating: 3\n")
    with pytest.raises(ChannelError, match="neither a rating"):
        parse_email(b"Message-ID: <a@b>\nDate: Wed, 04 Mar 2026 08:00:00 +0000\n\n> quoted only\n")
    [only_text] = parse_email(b"Message-ID: <a@b>\nDate: Wed, 04 Mar 2026 08:00:00 +0000\nSubject: hi\n\nthanks\n")
    assert "rating_value" not in only_text and only_text["comment"] == "thanks" and only_text["ticket_id"] == "a@b"


def test_chat_transcripts() -> None:
    results = outcomes("chat", "chat_transcripts.json")
    first, second, broken = results
    assert [(x.get("status"), x["event_time"]) for x in first[1] or []] == [
        ("created", "2026-03-02T14:00:00Z"), ("first_response", "2026-03-02T14:01:05Z"),
        ("resolved", "2026-03-02T14:09:30Z"), (None, "2026-03-02T14:09:40Z")]
    assert (first[1] or [])[-1]["rating_scale"] == "good_bad"
    assert [x.get("status") for x in second[1] or []] == ["created", "closed"]  # no agent reply: no first response
    assert broken[1] is None and broken[2] == "id and started_at are required"
    with pytest.raises(ChannelError, match="messages"):
        parse_chat_transcript({"id": "c", "started_at": 1, "messages": "nope"})


def test_social_mentions_carry_sentiment_not_a_rating() -> None:
    results = outcomes("social", "social_mentions.jsonl")
    submissions = [s[0] for _, s, _ in results if s]
    assert [s["sentiment_label"] for s in submissions] == ["positive", "negative", "neutral"]
    for s in submissions:
        assert "rating_value" not in s and "rating_scale" not in s
        assert s["kind"] == "feedback" and s["channel"] == "social" and -1 <= float(s["sentiment"]) <= 1
        clean(s, NOW_MS, 300_000)  # accepted as a comment-only feedback
    assert [e for _, s, e in results if s is None] == ["id, text and created_at are required",
                                                      "not JSON: Expecting value: line 1 column 1 (char 0)"]
    assert sentiment("I love this, great help")[0] > 0.5 > sentiment("terrible, useless support")[0]
    with pytest.raises(ChannelError):
        parse_social_mention({"id": "1", "created_at": "2026-01-01T00:00:00Z"})


def test_chinese_mentions_are_scored_with_snownlp() -> None:
    results = outcomes("social", "social_mentions_zh.jsonl")
    submissions = [s[0] for _, s, _ in results if s]
    assert [(s["sentiment_model"], s["sentiment_label"]) for s in submissions] == [
        ("snownlp", "positive"), ("snownlp", "negative"), ("vader", "positive")]  # the last is mostly Latin text
    for s in submissions:
        assert "rating_value" not in s and -1 <= float(s["sentiment"]) <= 1
        clean(s, NOW_MS, 300_000)
    assert submissions[1]["sentiment"] < -0.5 < 0.0 < submissions[0]["sentiment"]
    assert is_chinese("退款很快") and not is_chinese("Refund 很") and not is_chinese("サポートは良かった")
    assert not is_chinese("") and not is_chinese("1234 !!")
    assert sentiment("I love this, great help").model == "vader"
