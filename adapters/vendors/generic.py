"""Our own signed endpoint for any sender: raw submissions (docs/ingest-format.md).

Authentication: ``X-Satpulse-Signature`` = ``sha256=`` + hex HMAC-SHA256 of ``"{timestamp}.{raw body}"`` with
``X-Satpulse-Timestamp`` (Unix seconds), Chatwoot's scheme. Delivery identity: ``X-Satpulse-Delivery`` (optional:
send one and keep it on retries).
"""

from __future__ import annotations

from adapters.signatures import HmacSignature, sign_timestamp_dot_body_sha256
from adapters.vendors.declaration import DeliveryIdentity, Vendor
from adapters.vendors.payload import PayloadError, Submission, as_object, text_of


def parse_generic(payload: object, event: str | None = None) -> list[Submission]:
    """Our own signed endpoint: one raw submission, a list of them, or ``{"submissions": [...]}``. Only the
    envelope is checked here (objects with an event_id); the cleaner validates the fields."""
    items: object = payload
    if isinstance(payload, dict) and "submissions" in payload:
        items = payload["submissions"]
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise PayloadError("expected a submission object, a non-empty list, or {\"submissions\": [...]}")
    out: list[Submission] = []
    for index, item in enumerate(items):
        submission = as_object(item, f"submissions[{index}]")
        if not text_of(submission.get("event_id")):
            raise PayloadError(f"submissions[{index}].event_id is required")
        out.append(dict(submission))
    return out


VENDOR = Vendor(
    name="generic", parse=parse_generic,
    authentication=HmacSignature(secret_setting="generic_webhook_secret", signature_header="X-Satpulse-Signature",
                                 sign=sign_timestamp_dot_body_sha256, timestamp_header="X-Satpulse-Timestamp",
                                 hex_signature=True),
    delivery=DeliveryIdentity(header="X-Satpulse-Delivery"))
