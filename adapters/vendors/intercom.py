"""Intercom notification events: conversation ratings, created / first reply / closed / reopened conversations.

Authentication (developers.intercom.com webhooks, "Signed notifications"): ``X-Hub-Signature`` = ``sha1=`` + hex
HMAC-SHA1 of the raw body keyed with the app's client_secret; no timestamp is signed. Delivery identity: the
notification's ``id`` (``notif_...``) in the signed body, kept across retries while ``delivery_attempts``, hence
the body and the signature, change. Golden payloads: tests/fixtures/webhooks/intercom_*.json.
"""

from __future__ import annotations

from typing import Any

from adapters.signatures import HmacSignature, hmac_digest
from adapters.vendors.declaration import DeliveryIdentity, Vendor
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

_INTERCOM_CHANNEL = {"conversation": "chat", "email": "email", "push": "in_app", "facebook": "social",
                     "twitter": "social", "instagram": "social", "whatsapp": "chat", "sms": "sms",
                     "phone_call": "phone"}


def parse_intercom(payload: object, event: str | None = None) -> list[Submission]:
    """Intercom notification events (``type: notification_event``): conversation ratings 1-5 with remark
    (``conversation.rating.added``; editable, newest version wins), created / first admin reply / closed /
    reopened conversations. ``ping`` and other topics give no submissions."""
    body = as_object(payload, "body")
    if body.get("type") != "notification_event":
        raise PayloadError("expected an Intercom notification_event")
    topic = str(required(body, "topic", "body"))
    if topic == "ping" or not topic.startswith("conversation."):
        return []
    item = as_object(as_object(body.get("data"), "data").get("item"), "data.item")
    conversation_id = text_of(required(item, "id", "data.item"))
    source = optional_object(item, "source")
    channel = _INTERCOM_CHANNEL.get(str(source.get("type", "conversation")).lower(), "chat")
    common: dict[str, Any] = {
        "source": "intercom", "channel": channel, "ticket_id": conversation_id,
        "agent": text_of(item.get("admin_assignee_id")), "team": text_of(item.get("team_assignee_id")),
        "customer_id": text_of(optional_object(source, "author").get("id")) if source else None,
    }
    notified_at = body.get("created_at")
    if topic == "conversation.rating.added":
        rating = as_object(item.get("conversation_rating"), "data.item.conversation_rating")
        value = rating.get("rating")
        if value is None:
            raise PayloadError("data.item.conversation_rating.rating is required")
        version = version_of(rating.get("updated_at"), notified_at, rating.get("created_at"))
        teammate = optional_object(rating, "teammate")
        customer = optional_object(rating, "contact") or optional_object(rating, "customer")
        return [make_submission(
            kind="feedback", event_id=f"intercom:rating:{conversation_id}:{version}",
            event_time=rating.get("updated_at") or notified_at or rating.get("created_at"),
            rating_value=value, rating_scale="1-5", rating_id=f"intercom:{conversation_id}", rating_version=version,
            comment=text_of(rating.get("remark")),
            **{**common, "agent": text_of(teammate.get("id")) or common["agent"],
               "customer_id": text_of(customer.get("id")) or common["customer_id"]})]
    statistics = optional_object(item, "statistics")
    out: list[Submission] = []
    if topic == "conversation.user.created":
        out.append(make_submission(kind="ticket", event_id=f"intercom:{conversation_id}:created", status="created",
                                   event_time=item.get("created_at") or notified_at, **common))
    elif topic == "conversation.admin.replied" and statistics.get("first_admin_reply_at"):
        out.append(make_submission(kind="ticket", event_id=f"intercom:{conversation_id}:first_response",
                                   status="first_response", event_time=statistics["first_admin_reply_at"], **common))
    elif topic == "conversation.admin.closed":
        when = statistics.get("last_close_at") or notified_at
        out.append(make_submission(kind="ticket", event_id=f"intercom:{conversation_id}:resolved:{version_of(when)}",
                                   status="resolved", event_time=when, **common))
    elif topic == "conversation.admin.opened":
        when = item.get("updated_at") or notified_at
        out.append(make_submission(kind="ticket", event_id=f"intercom:{conversation_id}:reopened:{version_of(when)}",
                                   status="reopened", event_time=when, **common))
    return out


def sign(secret: str, timestamp: str | None, body: bytes) -> str:
    return "sha1=" + hmac_digest(secret, body, "sha1").hex()


VENDOR = Vendor(
    name="intercom", parse=parse_intercom,
    authentication=HmacSignature(secret_setting="intercom_client_secret", signature_header="X-Hub-Signature",
                                 sign=sign, hex_signature=True),
    delivery=DeliveryIdentity(field="id"))
