"""Freshdesk: satisfaction ratings (with the survey's other questions as secondary ratings) and ticket
automation webhooks.

Authentication: Freshdesk signs nothing; the automation rule sends a shared token in ``X-Satpulse-Token``
(``SATPULSE_FRESHDESK_WEBHOOK_TOKEN``) or HTTP basic credentials (``SATPULSE_FRESHDESK_BASIC_USER`` and
``_PASSWORD``), compared in constant time. No delivery id: a retry repeats the body, which identifies it. Golden
payloads: tests/fixtures/webhooks/freshdesk_*.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.signatures import TokenOrBasicAuth
from adapters.vendors.declaration import Vendor
from adapters.vendors.payload import (
    PayloadError,
    Submission,
    as_object,
    make_submission,
    required,
    secondary_ratings,
    text_of,
    version_of,
)

_FRESHDESK_SOURCE = {"1": "email", "2": "web", "3": "phone", "7": "chat", "9": "web", "10": "email",
                     "email": "email", "portal": "web", "phone": "phone", "chat": "chat", "feedback widget": "web",
                     "outbound email": "email", "twitter": "social", "facebook": "social", "whatsapp": "chat"}
_FRESHDESK_STATUS = {"resolved": "resolved", "closed": "closed", "4": "resolved", "5": "closed"}


def _freshdesk_rating(rating: Mapping[str, Any]) -> list[Submission]:
    ratings = as_object(rating.get("ratings"), "satisfaction_rating.ratings")
    if "default_question" not in ratings:
        raise PayloadError("satisfaction_rating.ratings.default_question is required")
    rating_id = required(rating, "id", "satisfaction_rating")
    version = version_of(rating.get("updated_at"), rating.get("created_at"))
    extra = secondary_ratings([(k, v, "freshdesk") for k, v in ratings.items() if k != "default_question"])
    return [make_submission(
        kind="feedback", event_id=f"freshdesk:rating:{rating_id}:{version}", source="freshdesk",
        channel=_FRESHDESK_SOURCE.get(str(rating.get("source", "")).lower(), "email"),
        event_time=rating.get("updated_at") or rating.get("created_at"), ticket_id=text_of(rating.get("ticket_id")),
        agent=text_of(rating.get("agent_id")), team=text_of(rating.get("group_id")),
        customer_id=text_of(rating.get("user_id")), rating_value=ratings["default_question"],
        rating_scale="freshdesk", rating_id=f"freshdesk:{rating_id}", rating_version=version,
        comment=text_of(rating.get("feedback")), survey_id=text_of(rating.get("survey_id")),
        secondary_ratings=extra)]


def parse_freshdesk(payload: object, event: str | None = None) -> list[Submission]:
    """Freshdesk: satisfaction ratings (API object ``{id, ticket_id, ratings: {default_question: 103, question_2:
    -102}, feedback, ...}``, bare, wrapped in ``satisfaction_rating`` or a list) and ticket automation webhooks
    (``{"freshdesk_webhook": {ticket_id, ticket_status, ...}}``, the body docs/adapters.md recommends).
    ``default_question`` is the CSAT rating; every other question of the survey goes to ``secondary_ratings``
    on the same submission (scale ``freshdesk``), never into a rating of its own."""
    if isinstance(payload, list):
        return [s for r in payload for s in _freshdesk_rating(as_object(r, "satisfaction_rating"))]
    body = as_object(payload, "body")
    if "satisfaction_rating" in body:
        return _freshdesk_rating(as_object(body["satisfaction_rating"], "satisfaction_rating"))
    if "ratings" in body:
        return _freshdesk_rating(body)
    if "freshdesk_webhook" not in body:
        raise PayloadError("expected a satisfaction rating (ratings.default_question) or a freshdesk_webhook object")
    hook = as_object(body["freshdesk_webhook"], "freshdesk_webhook")
    ticket_id = text_of(required(hook, "ticket_id", "freshdesk_webhook"))
    triggered = (text_of(hook.get("triggered_event")) or "").lower()
    status_text = (text_of(hook.get("ticket_status")) or "").lower()
    if "created" in triggered:
        status: str | None = "created"
        when = hook.get("ticket_created_at") or hook.get("triggered_at")
    else:
        status = _FRESHDESK_STATUS.get(status_text)
        when = hook.get("ticket_updated_at") or hook.get("triggered_at")
    if status is None:
        return []
    if when is None:
        raise PayloadError("freshdesk_webhook.ticket_updated_at (or triggered_at) is required")
    return [make_submission(
        kind="ticket", event_id=f"freshdesk:{ticket_id}:{status}:{version_of(when)}", source="freshdesk",
        channel=_FRESHDESK_SOURCE.get(str(hook.get("ticket_source", "")).lower(), "other"), event_time=when,
        ticket_id=ticket_id, agent=text_of(hook.get("ticket_agent_email")), team=text_of(hook.get("ticket_group_name")),
        category=text_of(hook.get("ticket_type")), customer_id=text_of(hook.get("ticket_contact_email")),
        status=status, priority=text_of(hook.get("ticket_priority")))]


VENDOR = Vendor(
    name="freshdesk", parse=parse_freshdesk,
    authentication=TokenOrBasicAuth(token_setting="freshdesk_webhook_token", user_setting="freshdesk_basic_user",
                                    password_setting="freshdesk_basic_password", token_header="X-Satpulse-Token"))
