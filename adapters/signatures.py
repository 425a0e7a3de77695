"""Webhook authentication, exactly as each vendor documents it. Pure functions, no I/O.

Every check raises :class:`AuthError` with a reason code from :data:`AUTH_REASONS`, and nothing else, whatever
the header values (aiohttp hands over header bytes that are not UTF-8 as lone surrogates: they are compared as
bytes, never decoded twice); comparisons use :func:`hmac.compare_digest`. Where a vendor signs a timestamp, it must
lie within ``tolerance_s`` of ``now``.

Sources (docs/adapters.md has the full list):
- Zendesk: developer.zendesk.com/documentation/webhooks/verifying/ -- base64(HMACSHA256(TIMESTAMP + BODY)),
  headers X-Zendesk-Webhook-Signature and X-Zendesk-Webhook-Signature-Timestamp (ISO-8601, e.g. 2024-04-17T17:18:10Z).
- Intercom: developers.intercom.com webhooks, "Signed notifications" -- X-Hub-Signature: sha1=<hex HMAC-SHA1 of the
  raw body keyed with the app's client_secret>. No timestamp is signed.
- Help Scout: developer.helpscout.com/webhooks -- X-HelpScout-Signature: base64(HMAC-SHA1(secret, raw body)).
  No timestamp is signed.
- Chatwoot: webhook object `secret` (Chatwoot API reference) -- X-Chatwoot-Signature: sha256=<hex HMAC-SHA256 of
  "{timestamp}.{raw body}">, X-Chatwoot-Timestamp (Unix seconds), X-Chatwoot-Delivery (id, stable across retries).
- Freshdesk: webhooks (automation rules) are not signed; a shared token header or HTTP basic auth is configured
  on the rule, and both are checked here in constant time.
- generic: our own scheme -- X-Satpulse-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{raw body}">,
  X-Satpulse-Timestamp (Unix seconds), optional X-Satpulse-Delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

AUTH_REASONS: tuple[str, ...] = (
    "missing_signature",  # the signature (or token / credentials) header is absent
    "bad_signature",  # present but does not match
    "missing_timestamp",  # a vendor that signs a timestamp sent none
    "bad_timestamp",  # the timestamp header cannot be read
    "stale_timestamp",  # further from now than the tolerance
    "not_configured",  # no secret configured for this vendor: every request is refused
)


class AuthError(ValueError):
    """The request is not authentic; ``reason`` is one of :data:`AUTH_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in AUTH_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _utf8(text: str) -> bytes:
    """``text`` as bytes; never raises (lone surrogates, e.g. undecodable header bytes, are kept as they are)."""
    return text.encode("utf-8", "surrogatepass")


def _hmac(secret: str, message: bytes, algorithm: str) -> bytes:
    return hmac.new(_utf8(secret), message, algorithm).digest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (aiohttp's CIMultiDict is, a plain dict in tests may not be)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return None if value is None or not value.strip() else value.strip()


def _require(headers: Mapping[str, str], name: str, reason: str) -> str:
    value = _header(headers, name)
    if value is None:
        raise AuthError(reason, f"header {name} is missing")
    return value


def _check_time(signed_at: float, now: float, tolerance_s: float) -> None:
    if abs(now - signed_at) > tolerance_s:
        raise AuthError("stale_timestamp",
                        f"signed at {signed_at:.0f}, now {now:.0f}: more than {tolerance_s:.0f} s apart")


def _unix_seconds(value: str) -> float:
    try:
        return float(int(value))
    except (ValueError, OverflowError):  # OverflowError: an integer beyond the range of a float
        raise AuthError("bad_timestamp", f"timestamp {value[:64]!r} is not Unix seconds") from None


def _iso_seconds(value: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AuthError("bad_timestamp", f"timestamp {value[:64]!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# --- signing (used by tests, the load generator and anyone sending to the generic endpoint) -----------------

def sign_zendesk(secret: str, timestamp: str, body: bytes) -> str:
    return base64.b64encode(_hmac(secret, _utf8(timestamp) + body, "sha256")).decode()


def sign_intercom(secret: str, body: bytes) -> str:
    return "sha1=" + _hmac(secret, body, "sha1").hex()


def sign_helpscout(secret: str, body: bytes) -> str:
    return base64.b64encode(_hmac(secret, body, "sha1")).decode()


def sign_timestamped_sha256(secret: str, timestamp: str, body: bytes) -> str:
    """Chatwoot and generic: ``sha256=`` + hex HMAC-SHA256 over ``"{timestamp}.{body}"``."""
    return "sha256=" + _hmac(secret, _utf8(timestamp) + b"." + body, "sha256").hex()


# --- verification -----------------------------------------------------------------------------------------

def verify_zendesk(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
    signature = _require(headers, "X-Zendesk-Webhook-Signature", "missing_signature")
    timestamp = _require(headers, "X-Zendesk-Webhook-Signature-Timestamp", "missing_timestamp")
    if not hmac.compare_digest(sign_zendesk(secret, timestamp, body).encode(), _utf8(signature)):
        raise AuthError("bad_signature", "X-Zendesk-Webhook-Signature does not match")
    _check_time(_iso_seconds(timestamp), now, tolerance_s)


def verify_intercom(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
    signature = _require(headers, "X-Hub-Signature", "missing_signature")
    if not hmac.compare_digest(sign_intercom(secret, body).encode(), _utf8(signature.lower())):
        raise AuthError("bad_signature", "X-Hub-Signature does not match")


def verify_helpscout(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
    signature = _require(headers, "X-HelpScout-Signature", "missing_signature")
    if not hmac.compare_digest(sign_helpscout(secret, body).encode(), _utf8(signature)):
        raise AuthError("bad_signature", "X-HelpScout-Signature does not match")


def _verify_sha256_ts(prefix: str, secret: str, headers: Mapping[str, str], body: bytes, now: float,
                      tolerance_s: float) -> None:
    signature = _require(headers, f"X-{prefix}-Signature", "missing_signature")
    timestamp = _require(headers, f"X-{prefix}-Timestamp", "missing_timestamp")
    expected = sign_timestamped_sha256(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), _utf8(signature.lower())):
        raise AuthError("bad_signature", f"X-{prefix}-Signature does not match")
    _check_time(_unix_seconds(timestamp), now, tolerance_s)


def verify_chatwoot(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
    _verify_sha256_ts("Chatwoot", secret, headers, body, now, tolerance_s)


def verify_generic(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
    _verify_sha256_ts("Satpulse", secret, headers, body, now, tolerance_s)


def verify_freshdesk(token: str | None, basic: tuple[str, str] | None, headers: Mapping[str, str]) -> None:
    """Freshdesk signs nothing: accept the configured ``X-Satpulse-Token`` header or HTTP basic credentials."""
    if token is None and basic is None:
        raise AuthError("not_configured", "no Freshdesk token or basic-auth credentials configured")
    sent_token = _header(headers, "X-Satpulse-Token")
    authorization = _header(headers, "Authorization")
    if sent_token is None and authorization is None:
        raise AuthError("missing_signature", "neither X-Satpulse-Token nor Authorization is present")
    if token is not None and sent_token is not None and hmac.compare_digest(_utf8(token), _utf8(sent_token)):
        return
    if basic is not None and authorization is not None and authorization[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
            raise AuthError("bad_signature", "Authorization is not valid basic credentials") from None
        # evaluate both comparisons so that timing does not tell which part was wrong
        ok_user = hmac.compare_digest(_utf8(basic[0]), _utf8(user))
        ok_password = hmac.compare_digest(_utf8(basic[1]), _utf8(password))
        if ok_user and ok_password:
            return
    raise AuthError("bad_signature", "token or credentials do not match")


@dataclass(frozen=True, slots=True)
class DeliveryIdentity:
    """Where a vendor's delivery is identified, so that its retries are recognised as the same delivery."""

    header: str | None = None  # a delivery-id header the vendor keeps across retries
    field: str | None = None  # a top-level payload field the vendor keeps across retries (covered by the signature)
    signed_time: str | None = None  # the signed timestamp header, part of the fallback digest


# Zendesk: one invocation id for every attempt of an invocation (each attempt is re-signed with a new timestamp);
# Intercom: the notification id ("notif_..."), kept across retries while the body (delivery_attempts) and so the
# signature change; Chatwoot: X-Chatwoot-Delivery; generic: X-Satpulse-Delivery (optional); Help Scout and
# Freshdesk send no delivery id and retry the same body.
DELIVERY_IDENTITY: dict[str, DeliveryIdentity] = {
    "zendesk": DeliveryIdentity(header="X-Zendesk-Webhook-Invocation-Id",
                                signed_time="X-Zendesk-Webhook-Signature-Timestamp"),
    "intercom": DeliveryIdentity(field="id"),
    "helpscout": DeliveryIdentity(),
    "chatwoot": DeliveryIdentity(header="X-Chatwoot-Delivery", signed_time="X-Chatwoot-Timestamp"),
    "freshdesk": DeliveryIdentity(),
    "generic": DeliveryIdentity(header="X-Satpulse-Delivery", signed_time="X-Satpulse-Timestamp"),
}


def _payload_field(payload: object, name: str) -> str | None:
    value = payload.get(name) if isinstance(payload, dict) else None
    return (value.strip() or None) if isinstance(value, str) else None


def delivery_id(vendor: str, headers: Mapping[str, str], body: bytes, payload: object) -> str:
    """The id a replay or a retry is recognised by (``payload`` is ``body`` parsed): ``{vendor}:{id}`` with the
    vendor's own delivery id (:data:`DELIVERY_IDENTITY`) where the request carries one, otherwise
    ``{vendor}:{sha256}`` of the signed timestamp (if the vendor signs one) and the body -- an exact replay
    repeats both; a retry that the vendor signs anew with a new timestamp is not recognised (its events are
    deduplicated downstream by event id). Raises KeyError for a vendor not in the table, nothing else."""
    identity = DELIVERY_IDENTITY[vendor]
    own = ((_header(headers, identity.header) if identity.header else None)
           or (_payload_field(payload, identity.field) if identity.field else None))
    if own is not None:
        return f"{vendor}:{own}"
    signed_time = (_header(headers, identity.signed_time) if identity.signed_time else None) or ""
    return f"{vendor}:" + hashlib.sha256(_utf8(signed_time) + b"\0" + body).hexdigest()


class Replayed(Exception):
    """The delivery was accepted within the replay window, or the same delivery is being handled right now."""


class ReplayGuard:
    """Bounded set of delivery ids seen within ``ttl_s`` (LRU eviction past ``max_size``).

    :meth:`held` is how the service uses it: the id is in flight during a with-block, recorded when the block
    completes and forgotten when it raises, so the vendor's retry of a delivery that failed is accepted, while a
    replay of a delivery that succeeded is refused. :meth:`reserve`, :meth:`commit` and :meth:`release` are its
    steps. In memory only, never blocks: the service persists committed ids with adapters/replay_store.py and
    restores them on start."""

    def __init__(self, max_size: int = 100_000, ttl_s: float = 86_400.0) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._in_flight: set[str] = set()
        self._max_size = max_size
        self._ttl_s = ttl_s

    def __len__(self) -> int:
        return len(self._seen)

    def restore(self, entries: Iterable[tuple[str, float]]) -> None:
        """Add ids accepted before (e.g. by a previous process, from adapters/replay_store.py), oldest first;
        the size and TTL bounds apply at the next :meth:`reserve` or :meth:`commit`."""
        for key, at in entries:
            self._seen[key] = at
            self._seen.move_to_end(key)

    def _expire(self, now: float) -> None:
        while self._seen:
            at = next(iter(self._seen.values()))
            if now - at <= self._ttl_s and len(self._seen) <= self._max_size:
                break
            self._seen.popitem(last=False)

    def reserve(self, key: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        self._expire(now)
        if key in self._in_flight or key in self._seen:
            return False
        self._in_flight.add(key)
        return True

    def commit(self, key: str, now: float | None = None) -> None:
        self._in_flight.discard(key)
        self._seen[key] = time.time() if now is None else now
        self._seen.move_to_end(key)
        self._expire(time.time() if now is None else now)

    def release(self, key: str) -> None:
        self._in_flight.discard(key)

    @contextmanager
    def held(self, key: str, now: float) -> Iterator[None]:
        """Hold ``key`` for the with-block: raises :class:`Replayed` before the block when ``key`` was committed
        within the TTL or is held already; commits it (at ``now``) when the block completes, releases it when
        the block raises anything (an error, a cancellation), so no failure path can leave it reserved."""
        if not self.reserve(key, now):
            raise Replayed(key)
        try:
            yield
        except BaseException:
            self.release(key)
            raise
        self.commit(key, now)
