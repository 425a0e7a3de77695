"""Validation and normalisation of raw submissions (topic ``satpulse.ingest.v1``) into clean feedback and
ticket records (dicts shaped like ``schemas/feedback_event.avsc`` / ``ticket_event.avsc``). Pure, no I/O.

A raw submission is one JSON object; the fields are documented in docs/ingest-format.md. Everything that
cannot become a clean record raises :class:`Rejected` with a reason code from :data:`REASONS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from streams.scales import ScaleError, normalise_rating

# dead-letter reason codes (one counter per reason in satpulse.metrics)
REASONS: tuple[str, ...] = (
    "unparseable_payload",  # not JSON / not an object / not decodable
    "missing_field",  # a required field is absent or empty
    "unknown_kind",  # kind is neither feedback nor ticket
    "unknown_scale",  # rating scale not known
    "invalid_rating",  # value not on its scale
    "bad_timestamp",  # unparseable or impossible timestamp / time zone
    "future_timestamp",  # event time further in the future than the tolerance
    "unknown_status",  # ticket status not in the lifecycle
    "negative_duration",  # a case's first response or resolution before its creation (window stage)
    "absurd_duration",  # a case duration above max_duration_seconds (window stage)
)

TICKET_STATUSES = ("created", "first_response", "resolved", "reopened", "closed")

_CHANNEL_ALIASES: dict[str, str] = {
    "phone": "phone", "voice": "phone", "call": "phone", "ivr": "phone", "telephone": "phone",
    "email": "email", "e-mail": "email", "mail": "email",
    "chat": "chat", "live chat": "chat", "livechat": "chat", "web chat": "chat", "messenger": "chat",
    "whatsapp": "chat", "social": "social", "social media": "social", "twitter": "social", "x": "social",
    "facebook": "social", "instagram": "social", "web": "web", "web survey": "web", "survey": "web",
    "web form": "web", "webform": "web", "sms": "sms", "text": "sms", "in-app": "in_app", "in_app": "in_app",
    "app": "in_app",
}
CHANNELS: tuple[str, ...] = (*sorted(set(_CHANNEL_ALIASES.values())), "other")

_PRIORITY_ALIASES = {
    "low": "low", "medium": "medium", "normal": "medium", "high": "high", "urgent": "urgent",
    "critical": "urgent", "1": "low", "2": "medium", "3": "high", "4": "urgent",
}


class Rejected(ValueError):
    """A raw submission that cannot be cleaned; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Cleaned:
    """A clean record and the schema it belongs to (``feedback_event`` or ``ticket_event``)."""

    schema: str
    key: str
    record: dict[str, Any]


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """Parse a raw payload (orjson: strict RFC 8259, so NaN, Infinity and lone surrogates are refused; integers
    beyond 64 bits become floats). Raises Rejected(unparseable_payload)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("unparseable_payload", f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Rejected("unparseable_payload", f"expected a JSON object, got {type(value).__name__}")
    return value


def normalise_channel(value: str) -> str:
    """Map a source's channel name to one of :data:`CHANNELS` (case and spacing folded)."""
    folded = " ".join(value.strip().lower().replace("_", " ").split())
    return _CHANNEL_ALIASES.get(folded, _CHANNEL_ALIASES.get(folded.replace(" ", ""), "other"))


_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")


def parse_event_time(value: object, default_tz: str = "UTC") -> int:
    """Epoch milliseconds (UTC) from ISO-8601 text, or epoch seconds / milliseconds as a number.

    Text without an offset is read in ``default_tz``. Raises Rejected(bad_timestamp)."""
    try:
        if isinstance(value, bool):
            raise ValueError("boolean")
        if isinstance(value, int | float) or (isinstance(value, str) and _NUMERIC.match(value.strip())):
            number = float(value)
            return int(number if abs(number) >= 1e11 else number * 1000)  # >= 1e11: already milliseconds
        if not isinstance(value, str):
            raise ValueError(f"unsupported type {type(value).__name__}")
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=ZoneInfo(default_tz))
        return int(parsed.astimezone(UTC).timestamp() * 1000)
    except (ValueError, OverflowError, ZoneInfoNotFoundError) as exc:
        raise Rejected("bad_timestamp", f"cannot read event time {value!r}: {exc}") from None


def _text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _required(raw: Mapping[str, Any], name: str) -> str:
    text = _text(raw, name)
    if text is None:
        raise Rejected("missing_field", f"{name} is required")
    return text


def _common(raw: Mapping[str, Any], now_ms: int, future_tolerance_ms: int) -> dict[str, Any]:
    if "event_time" not in raw or raw["event_time"] in (None, ""):
        raise Rejected("missing_field", "event_time is required")
    event_time = parse_event_time(raw["event_time"], _text(raw, "timezone") or "UTC")
    if event_time > now_ms + future_tolerance_ms:
        raise Rejected("future_timestamp", f"event_time {event_time} ms is more than "
                                           f"{future_tolerance_ms // 1000} s ahead of now ({now_ms} ms)")
    if event_time < 0:
        raise Rejected("bad_timestamp", f"event_time {event_time} ms is before 1970")
    return {
        "event_id": _required(raw, "event_id"),
        "source": _required(raw, "source"),
        "channel": normalise_channel(_required(raw, "channel")),
        "event_time": event_time,
        "ingest_time": now_ms,
        "agent": _text(raw, "agent"),
        "team": _text(raw, "team"),
        "category": _text(raw, "category"),
        "product": _text(raw, "product"),
        "customer_id": _text(raw, "customer_id"),
    }


def entity_key(raw: Mapping[str, Any]) -> str | None:
    """The key :func:`clean` gives the submission's clean event (rating id, else event id, for feedback; ticket
    id for ticket events), None when it has none. Producers key the ingest topic with it, so that a worker's
    ingest partition already holds every event of the ratings and cases it counts (streams/pipeline.py)."""
    if raw.get("kind", "feedback") == "ticket":
        return _text(raw, "ticket_id")
    return _text(raw, "rating_id") or _text(raw, "event_id")


def clean(raw: Mapping[str, Any], now_ms: int, future_tolerance_ms: int) -> Cleaned:
    """Validate and normalise one raw submission. Raises Rejected with the first problem found."""
    kind = raw.get("kind", "feedback")
    if kind == "feedback":
        return _clean_feedback(raw, now_ms, future_tolerance_ms)
    if kind == "ticket":
        return _clean_ticket(raw, now_ms, future_tolerance_ms)
    raise Rejected("unknown_kind", f"kind must be feedback or ticket, got {kind!r}")


def _clean_feedback(raw: Mapping[str, Any], now_ms: int, future_tolerance_ms: int) -> Cleaned:
    record = _common(raw, now_ms, future_tolerance_ms)
    value, scale = raw.get("rating_value"), _text(raw, "rating_scale")
    score: float | None = None
    satisfied: bool | None = None
    if value is not None and value != "":
        if scale is None:
            raise Rejected("missing_field", "rating_scale is required with rating_value")
        try:
            rating = normalise_rating(value, scale)
        except ScaleError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        score, satisfied = rating.score, rating.satisfied
    comment = _text(raw, "comment")
    sentiment = raw.get("sentiment")
    if sentiment is not None and (isinstance(sentiment, bool) or not isinstance(sentiment, int | float)
                                  or not -1.0 <= sentiment <= 1.0):
        raise Rejected("invalid_rating", f"sentiment {sentiment!r} is not a number in -1.0..1.0")
    if satisfied is None and comment is None:
        raise Rejected("missing_field", "feedback needs rating_value or comment")
    try:
        version = int(raw.get("rating_version") or 0)
    except (TypeError, ValueError):
        raise Rejected("missing_field", f"rating_version {raw.get('rating_version')!r} is not an integer") from None
    rating_id = _text(raw, "rating_id") or record["event_id"]
    record.update(
        sentiment_label=_text(raw, "sentiment_label"),
        sentiment_model=_text(raw, "sentiment_model"),
        survey_id=_text(raw, "survey_id"),
        secondary_answers=_secondary_answers(raw.get("secondary_ratings")),
    )
    record.update(
        rating_id=rating_id,
        rating_version=version,
        ticket_id=_text(raw, "ticket_id"),
        native_value=None if value is None else str(value),
        native_scale=scale,
        score=score,
        satisfied=satisfied,
        comment=comment,
        sentiment=None if sentiment is None else float(sentiment),
    )
    return Cleaned("feedback_event", rating_id, record)


def _secondary_answers(raw: object) -> list[dict[str, Any]]:
    """``secondary_ratings`` of a submission ([{question_id, rating_value, rating_scale}], from adapters whose
    surveys ask more than the CSAT question), normalised like the rating. Raises Rejected naming the answer."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Rejected("invalid_rating", "secondary_ratings must be a list")
    answers = []
    for i, answer in enumerate(raw):
        if not isinstance(answer, dict):
            raise Rejected("invalid_rating", f"secondary_ratings[{i}] must be an object")
        question, scale, value = _text(answer, "question_id"), _text(answer, "rating_scale"), answer.get("rating_value")
        if question is None or scale is None or value is None or value == "":
            raise Rejected("missing_field", f"secondary_ratings[{i}] needs question_id, rating_value and rating_scale")
        try:
            rating = normalise_rating(value, scale)
        except ScaleError as exc:
            raise Rejected(exc.reason, f"secondary_ratings[{i}] ({question}): {exc}") from None
        answers.append({"question_id": question, "native_value": str(value), "native_scale": scale,
                        "score": rating.score, "satisfied": rating.satisfied})
    return answers


def _clean_ticket(raw: Mapping[str, Any], now_ms: int, future_tolerance_ms: int) -> Cleaned:
    record = _common(raw, now_ms, future_tolerance_ms)
    status = _required(raw, "status").lower().replace(" ", "_")
    if status not in TICKET_STATUSES:
        raise Rejected("unknown_status", f"status {status!r} is not one of {', '.join(TICKET_STATUSES)}")
    priority = _text(raw, "priority")
    ticket_id = _required(raw, "ticket_id")
    record.update(
        ticket_id=ticket_id,
        status=status,
        priority=None if priority is None else _PRIORITY_ALIASES.get(priority.lower(), priority.lower()),
    )
    return Cleaned("ticket_event", ticket_id, record)
