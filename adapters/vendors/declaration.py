"""What a webhook vendor is, declared once in its own module (adapters/vendors/<vendor>.py) and listed in
adapters/vendors/registry.py: its payload parser, its authentication (secret settings, signature and timestamp
headers), its delivery identity (the id its retries keep) and the header that names the event, if any. The
service, the load generator and the tests read everything about a vendor from here. Pure, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.signatures import Authentication, header_value, utf8

Submission = dict[str, Any]
Parser = Callable[[object, str | None], list[Submission]]  # payload, event header -> submissions


@dataclass(frozen=True, slots=True)
class DeliveryIdentity:
    """Where a vendor's delivery is identified, so that its retries are recognised as the same delivery."""

    header: str | None = None  # a delivery-id header the vendor keeps across retries
    field: str | None = None  # a top-level payload field the vendor keeps across retries (covered by the signature)


@dataclass(frozen=True, slots=True)
class Vendor:
    """One webhook vendor: ``POST /webhooks/{name}``.

    ``parse`` turns the parsed body into raw submissions (docs/ingest-format.md): an empty list for a payload
    that carries nothing satpulse measures, :class:`adapters.vendors.payload.PayloadError` for one the vendor
    cannot have sent; it is pure and must not raise anything else (the service answers any exception 400).
    ``event_header`` is passed to ``parse`` (Help Scout names the event in a header only)."""

    name: str
    parse: Parser
    authentication: Authentication
    delivery: DeliveryIdentity = field(default_factory=DeliveryIdentity)
    event_header: str | None = None

    @property
    def header_names(self) -> tuple[str, ...]:
        """Every request header this vendor's handling reads."""
        names = (*self.authentication.header_names, self.delivery.header, self.event_header)
        return tuple(name for name in names if name is not None)

    def event(self, headers: Mapping[str, str]) -> str | None:
        return None if self.event_header is None else headers.get(self.event_header)

    def delivery_id(self, headers: Mapping[str, str], body: bytes, payload: object) -> str:
        """The id a replay or a retry is recognised by (``payload`` is ``body`` parsed): ``{name}:{id}`` with the
        vendor's own delivery id (:attr:`delivery`) where the request carries one, otherwise ``{name}:{sha256}``
        of the signed timestamp (if the vendor signs one) and the body -- an exact replay repeats both; a retry
        that the vendor signs anew with a new timestamp is not recognised (its events are deduplicated
        downstream by event id). Never raises."""
        own = ((header_value(headers, self.delivery.header) if self.delivery.header else None)
               or (_payload_field(payload, self.delivery.field) if self.delivery.field else None))
        if own is not None:
            return f"{self.name}:{own}"
        stamp_header = self.authentication.timestamp_header
        signed_time = (header_value(headers, stamp_header) if stamp_header else None) or ""
        return f"{self.name}:" + hashlib.sha256(utf8(signed_time) + b"\0" + body).hexdigest()


def _payload_field(payload: object, name: str) -> str | None:
    value = payload.get(name) if isinstance(payload, dict) else None
    return (value.strip() or None) if isinstance(value, str) else None
