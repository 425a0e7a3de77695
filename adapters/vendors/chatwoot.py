"""Chatwoot webhooks: CSAT survey responses, conversation created / resolved / reopened.

Authentication (webhook object ``secret``, Chatwoot API reference): ``X-Chatwoot-Signature`` = ``sha256=`` + hex
HMAC-SHA256 of ``"{timestamp}.{raw body}"`` with ``X-Chatwoot-Timestamp`` (Unix seconds). Delivery identity:
``X-Chatwoot-Delivery``, stable across retries. Golden payloads: tests/fixtures/webhooks/chatwoot_*.json.
"""

from __future__ import annotations

from typing import Any

from adapters.signatures import HmacSignature, sign_timestamp_dot_body_sha256
from adapters.vendors.declaration import DeliveryIdentity, Vendor
from adapters.vendors.payload import (
    PayloadError,
    Submission,
    as_object,
    make_submission,
    optional_list,
    optional_object,
    required,
    text_of,
    version_of,
)

_CHATWOOT_CHANNEL = {"channel::webwidget": "chat", "channel::email": "email", "channel::whatsapp": "chat",
                     "channel::sms": "sms", "channel::twiliosms": "sms", "channel::facebookpage": "social",
                     "channel::twitterprofile": "social", "channel::instagram": "social", "channel::telegram": "chat",
                     "channel::line": "chat", "channel::api": "other", "channel::voice": "phone"}


def parse_chatwoot(payload: object, event: str | None = None) -> list[Submission]:
    """Chatwoot: CSAT responses (``message_updated`` with ``content_type: input_csat`` and
    ``content_attributes.submitted_values.csat_survey_response = {rating 1-5, feedback_message}``),
    ``conversation_created`` and ``conversation_status_changed`` (resolved; open after resolved -> reopened)."""
    body = as_object(payload, "body")
    name = text_of(body.get("event"))
    if name is None:
        raise PayloadError("event is required")
    account = text_of(optional_object(body, "account").get("id")) or text_of(body.get("account_id")) or "0"
    if name in ("message_created", "message_updated"):
        if body.get("content_type") != "input_csat":
            return []
        submitted = optional_object(optional_object(body, "content_attributes"), "submitted_values")
        response = optional_object(submitted, "csat_survey_response")
        if not response:
            return []  # the survey was sent, not answered yet
        rating = response.get("rating")
        if rating is None:
            raise PayloadError("csat_survey_response.rating is required")
        conversation = optional_object(body, "conversation")
        message_id = text_of(required(body, "id", "message"))
        version = version_of(body.get("updated_at"), body.get("created_at"))
        meta = optional_object(conversation, "meta")
        return [make_submission(
            kind="feedback", event_id=f"chatwoot:{account}:csat:{message_id}:{version}", source="chatwoot",
            channel=_CHATWOOT_CHANNEL.get(str(conversation.get("channel", "")).lower(), "chat"),
            event_time=body.get("updated_at") or body.get("created_at"),
            ticket_id=text_of(conversation.get("display_id")) or text_of(conversation.get("id")),
            agent=text_of(optional_object(meta, "assignee").get("id")),
            customer_id=(text_of(optional_object(body, "contact").get("id"))
                         or text_of(optional_object(meta, "sender").get("id"))),
            rating_value=rating, rating_scale="1-5", rating_id=f"chatwoot:{account}:{message_id}",
            rating_version=version, comment=text_of(response.get("feedback_message")))]
    if name not in ("conversation_created", "conversation_status_changed"):
        return []
    conversation_id = text_of(required(body, "id", "conversation"))
    display_id = text_of(body.get("display_id")) or conversation_id
    meta = optional_object(body, "meta")
    common: dict[str, Any] = {
        "source": "chatwoot", "channel": _CHATWOOT_CHANNEL.get(str(body.get("channel", "")).lower(), "chat"),
        "ticket_id": display_id, "agent": text_of(optional_object(meta, "assignee").get("id")),
        "customer_id": text_of(optional_object(meta, "sender").get("id")), "priority": text_of(body.get("priority"))}
    timestamp = body.get("timestamp") or body.get("updated_at") or body.get("created_at")
    if name == "conversation_created":
        return [make_submission(kind="ticket", event_id=f"chatwoot:{account}:{conversation_id}:created",
                                status="created", event_time=body.get("created_at") or timestamp, **common)]
    status = str(body.get("status", "")).lower()
    previous = None
    for change in optional_list(body, "changed_attributes"):
        if isinstance(change, dict) and isinstance(change.get("status"), dict):
            previous = str(change["status"].get("previous_value", "")).lower()
    if status == "resolved":
        mapped = "resolved"
    elif status == "open" and previous == "resolved":
        mapped = "reopened"
    else:
        return []
    if timestamp is None:
        raise PayloadError("conversation timestamp is required")
    event_id = f"chatwoot:{account}:{conversation_id}:{mapped}:{version_of(timestamp)}"
    return [make_submission(kind="ticket", event_id=event_id, status=mapped, event_time=timestamp, **common)]


VENDOR = Vendor(
    name="chatwoot", parse=parse_chatwoot,
    authentication=HmacSignature(secret_setting="chatwoot_webhook_secret", signature_header="X-Chatwoot-Signature",
                                 sign=sign_timestamp_dot_body_sha256, timestamp_header="X-Chatwoot-Timestamp",
                                 hex_signature=True),
    delivery=DeliveryIdentity(header="X-Chatwoot-Delivery"))
