"""Help Scout webhooks: satisfaction ratings, report rows, conversation created / closed.

Authentication (developer.helpscout.com/webhooks): ``X-HelpScout-Signature`` = base64(HMAC-SHA1(secret, raw
body)); no timestamp is signed. The event is named in ``X-HelpScout-Event`` only. Help Scout sends no delivery
id: a retry repeats the body, which identifies it. Golden payloads: tests/fixtures/webhooks/helpscout_*.json.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from adapters.signatures import HmacSignature, hmac_digest
from adapters.vendors.declaration import Vendor
from adapters.vendors.payload import (
    PayloadError,
    Submission,
    as_object,
    make_submission,
    optional_object,
    required,
    text_of,
    version_of,
)

# webhook labels (Rating object: Great, Okay, Bad) and report codes (1 great, 2 okay, 3 not good) onto the
# helpscout scale of domain/scales.py (great / okay / notgood / 1 / 2 / 3)
_HELPSCOUT_LABEL = {"great": "great", "okay": "okay", "ok": "okay", "bad": "notgood", "not good": "notgood",
                    "notgood": "notgood", "1": "1", "2": "2", "3": "3"}


def _helpscout_rating(rating: Mapping[str, Any], channel: str) -> Submission:
    raw = rating.get("rating")
    label = _HELPSCOUT_LABEL.get(str(raw).strip().lower()) if raw is not None else None
    if label is None:
        raise PayloadError(f"rating {raw!r} is not a Help Scout rating (Great, Okay, Bad / Not Good, 1-3)")
    report = "ratingId" in rating  # report row: id is the conversation, ratingId the rating
    rating_id = text_of(rating.get("ratingId")) if report else text_of(rating.get("id"))
    if rating_id is None:
        raise PayloadError("rating id is required")
    version = version_of(rating.get("modifiedAt"), rating.get("createdAt"), rating.get("ratingCreatedAt"))
    customer = optional_object(rating, "customer")
    mailbox = optional_object(rating, "mailbox")
    return make_submission(
        kind="feedback", event_id=f"helpscout:rating:{rating_id}:{version}", source="helpscout",
        channel=str(rating.get("type") or channel),
        event_time=rating.get("modifiedAt") or rating.get("createdAt") or rating.get("ratingCreatedAt"),
        ticket_id=text_of(rating.get("id")) if report else text_of(rating.get("ticketId")),
        agent=text_of(rating.get("ratingUserId")) or text_of(optional_object(rating, "user").get("id")),
        team=text_of(mailbox.get("name")) or text_of(mailbox.get("id")), customer_id=text_of(customer.get("id")),
        rating_value=label, rating_scale="helpscout", rating_id=f"helpscout:{rating_id}", rating_version=version,
        comment=text_of(rating.get("comments")) or text_of(rating.get("ratingComments")))


def parse_helpscout(payload: object, event: str | None = None) -> list[Submission]:
    """Help Scout: ``satisfaction.ratings`` (Rating object; Great/Okay/Bad), report rows (``results`` with
    rating codes 1-3 and ratingId), and conversation events ``convo.created`` / ``convo.status`` (closed ->
    resolved). ``event`` is the X-HelpScout-Event header."""
    body = as_object(payload, "body")
    if "results" in body:  # happiness / user ratings report page
        results = body["results"]
        if not isinstance(results, list):
            raise PayloadError("results must be a list")
        return [_helpscout_rating(as_object(r, "results[]"), "email") for r in results]
    if event == "satisfaction.ratings" or (event is None and "rating" in body):
        return [_helpscout_rating(body, "email")]
    if event not in ("convo.created", "convo.status"):
        return []
    conversation_id = text_of(required(body, "id", "conversation"))
    channel = str(body.get("type") or "email")
    assignee = optional_object(body, "assignee")
    customer = optional_object(body, "primaryCustomer") or optional_object(body, "customer")
    common: dict[str, Any] = {"source": "helpscout", "channel": channel, "ticket_id": conversation_id,
                              "agent": text_of(assignee.get("id")), "team": text_of(body.get("mailboxId")),
                              "customer_id": text_of(customer.get("id"))}
    if event == "convo.created":
        return [make_submission(kind="ticket", event_id=f"helpscout:{conversation_id}:created", status="created",
                                event_time=required(body, "createdAt", "conversation"), **common)]
    if str(body.get("status", "")).lower() == "closed":
        when = body.get("closedAt") or body.get("userUpdatedAt") or body.get("modifiedAt")
        if when is None:
            raise PayloadError("conversation.closedAt is required for a closed conversation")
        return [make_submission(kind="ticket", event_id=f"helpscout:{conversation_id}:resolved:{version_of(when)}",
                                status="resolved", event_time=when, **common)]
    return []


def sign(secret: str, timestamp: str | None, body: bytes) -> str:
    return base64.b64encode(hmac_digest(secret, body, "sha1")).decode()


VENDOR = Vendor(
    name="helpscout", parse=parse_helpscout,
    authentication=HmacSignature(secret_setting="helpscout_webhook_secret", signature_header="X-HelpScout-Signature",
                                 sign=sign),
    event_header="X-HelpScout-Event")
