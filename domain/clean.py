"""Validation and normalisation of raw submissions (topic ``satpulse.ingest.v1``) into clean feedback and
ticket records (:mod:`domain.records`, shaped like ``schemas/feedback_event.avsc`` / ``ticket_event.avsc``).
Pure, no I/O.

A raw submission is one JSON object; the fields are documented in docs/ingest-format.md. Everything that
cannot become a clean record raises :class:`Rejected` with a reason code from :data:`REASONS`.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, available_timezones

import orjson

from domain.limits import DEFAULT_LIMITS, Limits, payload_problem, value_problem
from domain.records import (
    ID_FIELDS,
    CleanEvent,
    CommonFields,
    FeedbackEvent,
    SecondaryAnswer,
    TicketEvent,
    TicketStatus,
)
from domain.scales import ScaleError, normalise_rating

# dead-letter reason codes (one counter per reason in satpulse.metrics)
REASONS: tuple[str, ...] = (
    "unparseable_payload",  # not JSON / not an object / not decodable
    "too_large",  # the payload, a string in it, or the clean event is over its size limit (domain/limits.py)
    "too_deep",  # objects or arrays nested deeper than the limit
    "invalid_field",  # a field of the wrong type (an object where text is expected, a version that is no integer)
    "missing_field",  # a required field is absent or empty
    "unknown_kind",  # kind is neither feedback nor ticket
    "unknown_scale",  # rating scale not known
    "invalid_rating",  # value not on its scale
    "bad_timestamp",  # unparseable or impossible timestamp / time zone
    "future_timestamp",  # event time further in the future than the tolerance
    "unknown_status",  # ticket status not in the lifecycle
    "negative_duration",  # a case's first response or resolution before its creation (window stage)
    "absurd_duration",  # a case duration above max_duration_seconds (window stage)
    "processing_error",  # any other failure while processing this one record (exception class and message)
)
MAX_SECONDARY_ANSWERS = 100  # secondary_ratings of one submission
MAX_RATING_VERSION = 2**63 - 1  # Avro long

TICKET_STATUSES: tuple[TicketStatus, ...] = typing.get_args(TicketStatus)

_CHANNEL_ALIASES: dict[str, str] = {
    "phone": "phone", "voice": "phone", "call": "phone", "ivr": "phone", "telephone": "phone",
    "email": "email", "e-mail": "email", "mail": "email",
    "chat": "chat", "live chat": "chat", "livechat": "chat", "web chat": "chat", "messenger": "chat",
    "whatsapp": "chat", "social": "social", "social media": "social", "twitter": "social", "x": "social",
    "facebook": "social", "instagram": "social", "web": "web", "web survey": "web", "survey": "web",
    "web form": "web", "webform": "web", "sms": "sms", "text": "sms", "in-app": "in_app", "in app": "in_app",
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


class Cleaned(NamedTuple):
    """A clean record and the schema it belongs to (``feedback_event`` or ``ticket_event``)."""

    schema: str
    key: str
    record: CleanEvent


def parse_json_object(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse a raw payload (orjson: strict RFC 8259, so NaN, Infinity, numbers beyond a double and lone
    surrogates are refused) and check it against ``limits``. Raises Rejected (unparseable_payload, too_large,
    too_deep)."""
    problem = payload_problem(payload, limits)
    if problem is not None:
        raise Rejected(*problem)
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("unparseable_payload", f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Rejected("unparseable_payload", f"expected a JSON object, got {type(value).__name__}")
    problem = value_problem(value, limits)
    if problem is not None:
        raise Rejected(*problem)
    return value


def normalise_channel(value: str) -> str:
    """Map a source's channel name to one of :data:`CHANNELS` (case, spacing and underscores folded)."""
    folded = " ".join(value.strip().lower().replace("_", " ").split())
    return _CHANNEL_ALIASES.get(folded, _CHANNEL_ALIASES.get(folded.replace(" ", ""), "other"))


_NUMERIC = re.compile(r"^-?\d{1,20}(\.\d{1,20})?$")


@cache
def _zone_names() -> frozenset[str]:
    """The zone database's keys (IANA names such as Europe/Berlin), read once."""
    return frozenset(available_timezones()) | {"UTC"}


def zone(name: str) -> ZoneInfo:
    """The time zone ``name``. Raises Rejected(bad_timestamp) for anything that is not a key of the zone
    database (directories such as "America", paths, over-long names are never looked up on disk)."""
    if name not in _zone_names():
        raise Rejected("bad_timestamp", f"unknown time zone {name[:64]!r}")
    return ZoneInfo(name)


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
            parsed = parsed.replace(tzinfo=zone(default_tz))
        return int(parsed.astimezone(UTC).timestamp() * 1000)
    except (ValueError, OverflowError) as exc:
        raise Rejected("bad_timestamp", f"cannot read event time {str(value)[:64]!r}: {exc}") from None


class _Fields:
    """Typed, bounded access to a submission's fields (or one of its nested objects)."""

    __slots__ = ("limits", "max_id_chars", "raw")

    def __init__(self, raw: Mapping[str, Any], limits: Limits) -> None:
        self.raw = raw
        self.limits = limits
        self.max_id_chars = limits.max_id_chars

    def text(self, name: str, max_chars: int = 0) -> str | None:
        """The field as stripped text (numbers as written), None when absent or blank. Raises Rejected:
        invalid_field for an object, array or boolean, too_large beyond ``max_chars`` (0: the id limit)."""
        value = self.raw.get(name)
        if value is None:
            return None
        if type(value) is str:
            text = value.strip()
        elif isinstance(value, dict | list | bool):
            raise Rejected("invalid_field", f"{name} must be text or a number, not {type(value).__name__}")
        else:
            text = str(value).strip()
        if len(text) > (max_chars or self.max_id_chars):
            raise Rejected("too_large", f"{name} has {len(text)} characters (limit {max_chars or self.max_id_chars})")
        return text or None

    def required(self, name: str) -> str:
        text = self.text(name)
        if text is None:
            raise Rejected("missing_field", f"{name} is required")
        return text


def _version(raw: Mapping[str, Any]) -> int:
    """``rating_version``: a non-negative integer (or its decimal digits as text); absent means 0. Raises
    Rejected(invalid_field) for anything else (1.5, -1, true, "v2")."""
    value = raw.get("rating_version")
    if value is None or value == "":
        return 0
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 19:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RATING_VERSION:
        raise Rejected("invalid_field", f"rating_version {str(value)[:64]!r} is not a non-negative integer")
    return value


def _common(f: _Fields, now_ms: int, future_tolerance_ms: int) -> CommonFields:
    raw = f.raw
    if "event_time" not in raw or raw["event_time"] in (None, ""):
        raise Rejected("missing_field", "event_time is required")
    event_time = parse_event_time(raw["event_time"], f.text("timezone") or "UTC")
    if event_time > now_ms + future_tolerance_ms:
        raise Rejected("future_timestamp", f"event_time {event_time} ms is more than "
                                           f"{future_tolerance_ms // 1000} s ahead of now ({now_ms} ms)")
    if event_time < 0:
        raise Rejected("bad_timestamp", f"event_time {event_time} ms is before 1970")
    return {
        "event_id": f.required("event_id"),
        "source": f.required("source"),
        "channel": normalise_channel(f.required("channel")),
        "event_time": event_time,
        "ingest_time": now_ms,
        "agent": f.text("agent"),
        "team": f.text("team"),
        "category": f.text("category"),
        "product": f.text("product"),
        "customer_id": f.text("customer_id"),
    }


def entity_key(raw: Mapping[str, Any]) -> str | None:
    """The key :func:`clean` gives the submission's clean event (rating id, else event id, for feedback; ticket
    id for ticket events), None when it has none or the id is not valid (the cleaner then rejects it). Producers
    key the ingest topic with it, so that a worker's ingest partition already holds every event of the ratings
    and cases it counts (streams/pipeline.py)."""
    f = _Fields(raw, DEFAULT_LIMITS)
    try:
        if raw.get("kind", "feedback") == "ticket":
            return f.text("ticket_id")
        return f.text("rating_id") or f.text("event_id")
    except Rejected:
        return None


def clean(raw: Mapping[str, Any], now_ms: int, future_tolerance_ms: int, limits: Limits = DEFAULT_LIMITS
          ) -> Cleaned:
    """Validate and normalise one raw submission (already within ``limits`` as :func:`parse_json_object`
    checks them). Raises Rejected with the first problem found; any other exception is a defect that the
    caller's guard turns into a processing_error dead letter (streams/cleaner.py)."""
    kind = raw.get("kind", "feedback")
    f = _Fields(raw, limits)
    if kind == "feedback":
        return _clean_feedback(f, now_ms, future_tolerance_ms)
    if kind == "ticket":
        return _clean_ticket(f, now_ms, future_tolerance_ms)
    raise Rejected("unknown_kind", f"kind must be feedback or ticket, got {str(kind)[:64]!r}")


def _clean_feedback(f: _Fields, now_ms: int, future_tolerance_ms: int) -> Cleaned:
    common = _common(f, now_ms, future_tolerance_ms)
    value, scale = f.raw.get("rating_value"), f.text("rating_scale")
    native: str | None = None
    score: float | None = None
    satisfied: bool | None = None
    if value is not None and value != "":
        if scale is None:
            raise Rejected("missing_field", "rating_scale is required with rating_value")
        native, score, satisfied = _rating(f, "rating_value", scale, "")
    comment = f.text("comment", f.limits.max_text_chars)
    sentiment = f.raw.get("sentiment")
    if sentiment is not None and (isinstance(sentiment, bool) or not isinstance(sentiment, int | float)
                                  or not -1.0 <= sentiment <= 1.0):
        raise Rejected("invalid_rating", f"sentiment {str(sentiment)[:64]!r} is not a number in -1.0..1.0")
    if satisfied is None and comment is None:
        raise Rejected("missing_field", "feedback needs rating_value or comment")
    rating_id = f.text("rating_id") or common["event_id"]
    record: FeedbackEvent = {
        **common,
        "sentiment_label": f.text("sentiment_label"),
        "sentiment_model": f.text("sentiment_model"),
        "survey_id": f.text("survey_id"),
        "secondary_answers": _secondary_answers(f.raw.get("secondary_ratings"), f.limits),
        "rating_id": rating_id,
        "rating_version": _version(f.raw),
        "ticket_id": f.text("ticket_id"),
        "native_value": native if native is not None or value is None else str(value),
        "native_scale": scale,
        "score": score,
        "satisfied": satisfied,
        "comment": comment,
        "sentiment": None if sentiment is None else float(sentiment),
    }
    return Cleaned("feedback_event", rating_id, record)


def _rating(f: _Fields, name: str, scale: str, where: str) -> tuple[str | None, float | None, bool]:
    """(native value as text, score, satisfied) of the rating in field ``name`` on ``scale``. Raises
    Rejected."""
    value = f.raw.get(name)
    if isinstance(value, dict | list):
        raise Rejected("invalid_rating", f"{where}{name} must be text or a number, not {type(value).__name__}")
    native = f.text(name)  # bounded like an id
    try:
        rating = normalise_rating(value, scale)
    except ScaleError as exc:
        raise Rejected(exc.reason, f"{where}{exc}") from None
    return native, rating.score, rating.satisfied


def _secondary_answers(raw: object, limits: Limits) -> list[SecondaryAnswer]:
    """``secondary_ratings`` of a submission ([{question_id, rating_value, rating_scale}], from adapters whose
    surveys ask more than the CSAT question; at most :data:`MAX_SECONDARY_ANSWERS`), normalised like the
    rating. Raises Rejected naming the answer."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Rejected("invalid_rating", "secondary_ratings must be a list")
    if len(raw) > MAX_SECONDARY_ANSWERS:
        raise Rejected("too_large", f"{len(raw)} secondary_ratings (limit {MAX_SECONDARY_ANSWERS})")
    answers: list[SecondaryAnswer] = []
    for i, answer in enumerate(raw):
        if not isinstance(answer, dict):
            raise Rejected("invalid_rating", f"secondary_ratings[{i}] must be an object")
        a = _Fields(answer, limits)
        question, scale, value = a.text("question_id"), a.text("rating_scale"), a.text("rating_value")
        if question is None or scale is None or value is None:
            raise Rejected("missing_field", f"secondary_ratings[{i}] needs question_id, rating_value and rating_scale")
        _, score, satisfied = _rating(a, "rating_value", scale, f"secondary_ratings[{i}] ({question}): ")
        answers.append({"question_id": question, "native_value": value, "native_scale": scale,
                        "score": score, "satisfied": satisfied})
    return answers


def _clean_ticket(f: _Fields, now_ms: int, future_tolerance_ms: int) -> Cleaned:
    common = _common(f, now_ms, future_tolerance_ms)
    status = f.required("status").lower().replace(" ", "_")
    if status not in TICKET_STATUSES:
        raise Rejected("unknown_status", f"status {status[:64]!r} is not one of {', '.join(TICKET_STATUSES)}")
    priority = f.text("priority")
    ticket_id = f.required("ticket_id")
    record: TicketEvent = {
        **common,
        "ticket_id": ticket_id,
        "status": status,
        "priority": None if priority is None else _PRIORITY_ALIASES.get(priority.lower(), priority.lower()),
    }
    return Cleaned("ticket_event", ticket_id, record)


def check_clean_record(record: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> None:
    """Check a clean event read back from Kafka (any producer may write Avro that decodes) against the rules
    :func:`clean` guarantees and the store relies on: times and versions non-negative, a known channel, the
    score on 1.0-5.0, text within the limits. Raises Rejected(invalid_field)."""
    problems = [name for name in ("event_time", "ingest_time", "rating_version")
                if not 0 <= record.get(name, 0) <= MAX_RATING_VERSION]
    if record.get("channel") not in CHANNELS:
        problems.append("channel")
    score = record.get("score")
    if score is not None and not 1.0 <= score <= 5.0:
        problems.append("score")
    problems += [name for name in ID_FIELDS if len(record.get(name) or "") > limits.max_id_chars]
    if len(record.get("comment") or "") > limits.max_text_chars:
        problems.append("comment")
    if problems:
        raise Rejected("invalid_field", f"clean event breaks the schema's rules in {', '.join(problems)}")
