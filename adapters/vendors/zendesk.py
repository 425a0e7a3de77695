"""Zendesk webhooks: ticket events, legacy satisfaction ratings and CSAT survey responses (updated CSAT).

Authentication (developer.zendesk.com/documentation/webhooks/verifying/): ``X-Zendesk-Webhook-Signature`` =
base64(HMAC-SHA256(secret, timestamp + body)) with ``X-Zendesk-Webhook-Signature-Timestamp`` (ISO-8601, e.g.
2024-04-17T17:18:10Z) signed too. Delivery identity: ``X-Zendesk-Webhook-Invocation-Id``, the same for every
attempt of one invocation (each attempt is signed anew with a new timestamp). Payload shapes follow the docs; the
golden payloads are tests/fixtures/webhooks/zendesk_*.json.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from adapters.signatures import ISO_8601, HmacSignature, hmac_digest, utf8
from adapters.vendors.declaration import DeliveryIdentity, Vendor
from adapters.vendors.payload import (
    PayloadError,
    Submission,
    as_object,
    make_submission,
    optional_list,
    optional_object,
    required,
    secondary_ratings,
    text_of,
    version_of,
)

_ZENDESK_CHANNEL = {"web": "web", "email": "email", "mail": "email", "chat": "chat", "native_messaging": "chat",
                    "voice": "phone", "phone": "phone", "api": "other", "twitter": "social", "facebook": "social",
                    "sms": "sms", "mobile_sdk": "in_app", "whatsapp": "chat", "instagram_dm": "social"}


def _zendesk_rating(rating: Mapping[str, Any], fallback_channel: str | None) -> list[Submission]:
    score = text_of(rating.get("score"))
    if score is None:
        raise PayloadError("satisfaction_rating.score is required")
    score = score.lower()
    if score in ("offered", "unoffered"):
        return []  # survey lifecycle, not a rating: nothing to count (docs/adapters.md)
    rating_id = required(rating, "id", "satisfaction_rating")
    version = version_of(rating.get("updated_at"), rating.get("created_at"))
    return [make_submission(
        kind="feedback", event_id=f"zendesk:rating:{rating_id}:{version}", source="zendesk",
        channel=fallback_channel or "web", event_time=rating.get("updated_at") or rating.get("created_at"),
        ticket_id=text_of(rating.get("ticket_id")), agent=text_of(rating.get("assignee_id")),
        team=text_of(rating.get("group_id")), customer_id=text_of(rating.get("requester_id")),
        rating_value=score, rating_scale="good_bad", rating_id=f"zendesk:{rating_id}", rating_version=version,
        comment=text_of(rating.get("comment")), reason=text_of(rating.get("reason")))]


# updated CSAT: rating-scale questions offer 2, 3 or 5 options (ratings 1..n); n -> satpulse scale
_ZENDESK_POINTS = {5: "1-5", 3: "1-3"}
_ZENDESK_SUBJECT_CHANNEL = {"ticket": "web", "request": "web", "conversation": "chat"}


def _zendesk_rating_answer(answer: Mapping[str, Any], where: str) -> tuple[object, str]:
    """(rating_value, rating_scale) of a ``rating_scale`` answer. With the question's options (the Show endpoint
    with a locale sends them) the number of options gives the scale: 5 -> ``1-5``, 3 -> ``1-3``, 2 -> good/bad
    from ``rating_category``. Without them the size of the scale is unknown, and ``rating_category`` is read
    as good/bad the way Zendesk reads it for its legacy reports: good -> good, neutral and bad -> bad."""
    rating = answer.get("rating")
    category = (text_of(answer.get("rating_category")) or "").lower()
    options = optional_object(answer, "question").get("options")
    points = len(options) if isinstance(options, list) else 0
    if points in _ZENDESK_POINTS:
        if rating is None:
            raise PayloadError(f"{where}.rating is required")
        return rating, _ZENDESK_POINTS[points]
    if category not in ("good", "neutral", "bad"):
        raise PayloadError(f"{where}.rating_category must be good, neutral or bad, got {category or None!r}")
    return ("good" if category == "good" else "bad"), "good_bad"


def _zendesk_survey_response(response: Mapping[str, Any]) -> list[Submission]:
    """One CSAT survey response (CSAT Survey Responses API object). The ``rating_scale`` answer whose question
    has ``sub_type: customer_satisfaction`` is the rating; answered ``open_ended`` questions are the comment;
    other rating-scale answers go to ``secondary_ratings``; closed-ended selections (reason option ids) and
    skipped answers are not passed on. A response whose CSAT question was skipped and that has no comment
    gives nothing. Edits keep the rating id; the version is the newest answer's ``updated_at``."""
    response_id = text_of(required(response, "id", "survey_response"))
    answers = response.get("answers")
    if not isinstance(answers, list):
        raise PayloadError("survey_response.answers must be a list")
    csat: dict[str, Any] | None = None
    comments: list[str] = []
    secondary: list[tuple[str, object, str]] = []
    for index, item in enumerate(answers):
        answer = as_object(item, f"survey_response.answers[{index}]")
        kind = answer.get("type")
        question = optional_object(answer, "question")
        if kind == "rating_scale":
            if question.get("sub_type", "customer_satisfaction") == "customer_satisfaction" and csat is None:
                csat = answer
            else:
                other = _zendesk_rating_answer(answer, f"survey_response.answers[{index}]")
                secondary.append((str(question.get("id") or question.get("alias")), *other))
        elif kind == "open_ended" and text_of(answer.get("value")):
            comments.append(str(answer["value"]).strip())
    comment = "\n".join(comments) or None
    if csat is None and comment is None:
        return []
    subject = next((s for s in optional_list(response, "subjects") if isinstance(s, dict)), {})
    zrn = str(subject.get("zrn") or next(iter(optional_list(response, "subject_zrns")), ""))
    zrn_parts = zrn.split(":")  # zen:ticket:99
    subject_type = text_of(subject.get("type")) or (zrn_parts[1] if len(zrn_parts) == 3 else "ticket")
    ticket_id = text_of(subject.get("id")) or (zrn_parts[2] if len(zrn_parts) == 3 else None)
    times = [a.get("updated_at") or a.get("created_at") for a in answers if isinstance(a, dict)]
    version = max((version_of(t) for t in times if t), default=0)
    when = (csat or {}).get("updated_at") or (csat or {}).get("created_at") or max(
        (t for t in times if t), key=version_of, default=None)
    value: object = None
    scale: str | None = None
    if csat is not None:
        value, scale = _zendesk_rating_answer(csat, "survey_response.csat_answer")
    return [make_submission(
        kind="feedback", event_id=f"zendesk:survey:{response_id}:{version}", source="zendesk",
        channel=_ZENDESK_SUBJECT_CHANNEL.get(str(subject_type).lower(), "web"), event_time=when,
        ticket_id=ticket_id, customer_id=text_of(response.get("responder_id")), rating_value=value,
        rating_scale=scale, rating_id=f"zendesk:survey:{response_id}", rating_version=version, comment=comment,
        survey_id=text_of(optional_object(response, "survey").get("id")) or text_of(response.get("survey_id")),
        secondary_ratings=secondary_ratings(secondary))]


def _zendesk_ticket_status(previous: str | None, current: str) -> str | None:
    current, previous = current.lower(), (previous or "").lower()
    if current == "solved":
        return "resolved"
    if current == "closed":
        return "closed"
    if previous in ("solved", "closed") and current in ("new", "open", "pending", "hold"):
        return "reopened"
    return None


def parse_zendesk(payload: object, event: str | None = None) -> list[Submission]:
    """Zendesk: ticket events (``zen:event-type:ticket.*``, webhook event-type schema), legacy satisfaction
    ratings (CSAT object, as sent by a trigger's JSON body ``{"satisfaction_rating": {...}}`` or an export page
    ``{"satisfaction_ratings": [...]}``; score good/bad, offered/unoffered ignored as survey lifecycle) and CSAT
    survey responses of the updated CSAT (``{"survey_response": {...}}`` or a List Survey Responses page
    ``{"survey_responses": [...]}``; see :func:`_zendesk_survey_response`)."""
    body = as_object(payload, "body")
    if "survey_responses" in body:
        responses = body["survey_responses"]
        if not isinstance(responses, list):
            raise PayloadError("survey_responses must be a list")
        return [s for r in responses for s in _zendesk_survey_response(as_object(r, "survey_responses[]"))]
    if "survey_response" in body:
        return _zendesk_survey_response(as_object(body["survey_response"], "survey_response"))
    if "satisfaction_ratings" in body:
        ratings = body["satisfaction_ratings"]
        if not isinstance(ratings, list):
            raise PayloadError("satisfaction_ratings must be a list")
        return [s for r in ratings for s in _zendesk_rating(as_object(r, "satisfaction_ratings[]"), None)]
    if "satisfaction_rating" in body:
        ticket = optional_object(body, "ticket")
        channel = _ZENDESK_CHANNEL.get(str(optional_object(ticket, "via").get("channel", "")).lower())
        return _zendesk_rating(as_object(body["satisfaction_rating"], "satisfaction_rating"), channel)
    event_type = text_of(body.get("type"))
    if event_type is None or not event_type.startswith("zen:event-type:"):
        raise PayloadError("expected a Zendesk event (type zen:event-type:...) or a satisfaction_rating object")
    if not event_type.startswith("zen:event-type:ticket."):
        return []  # user, organisation, article events: nothing satpulse measures
    detail = as_object(body.get("detail"), "detail")
    change = optional_object(body, "event")
    ticket_id = text_of(detail.get("id")) or text_of(str(body.get("subject", "")).rpartition(":")[2])
    if ticket_id is None:
        raise PayloadError("detail.id (the ticket id) is required")
    name = event_type.removeprefix("zen:event-type:ticket.")
    if name == "created":
        status: str | None = "created"
        when = detail.get("created_at") or body.get("time")
    elif name == "status_changed":
        current, previous = change.get("current"), change.get("previous")
        if isinstance(current, dict):  # some event versions wrap the value: {"current": {"status": "Open"}}
            current = current.get("status")
        if isinstance(previous, dict):
            previous = previous.get("status")
        if text_of(current) is None:
            raise PayloadError("event.current (the new status) is required for ticket.status_changed")
        status = _zendesk_ticket_status(text_of(previous), str(current))
        when = body.get("time") or detail.get("updated_at")
    else:
        return []
    if status is None:
        return []
    event_id = required(body, "id", "body")
    return [make_submission(
        kind="ticket", event_id=f"zendesk:{event_id}", source="zendesk",
        channel=_ZENDESK_CHANNEL.get(str(optional_object(detail, "via").get("channel", "")).lower(), "other"),
        event_time=when, ticket_id=ticket_id, agent=text_of(detail.get("assignee_id")),
        team=text_of(detail.get("group_id")), customer_id=text_of(detail.get("requester_id")), status=status,
        priority=text_of(detail.get("priority")))]


def sign(secret: str, timestamp: str | None, body: bytes) -> str:
    return base64.b64encode(hmac_digest(secret, utf8(timestamp or "") + body, "sha256")).decode()


VENDOR = Vendor(
    name="zendesk", parse=parse_zendesk,
    authentication=HmacSignature(secret_setting="zendesk_webhook_secret",
                                 signature_header="X-Zendesk-Webhook-Signature", sign=sign,
                                 timestamp_header="X-Zendesk-Webhook-Signature-Timestamp", timestamp_format=ISO_8601),
    delivery=DeliveryIdentity(header="X-Zendesk-Webhook-Invocation-Id"))
