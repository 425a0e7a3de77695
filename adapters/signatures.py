"""Webhook authentication, exactly as each vendor documents it. Pure functions, no I/O.

Every check raises :class:`AuthError` with a reason code from :data:`AUTH_REASONS`; comparisons use
:func:`hmac.compare_digest`. Where a vendor signs a timestamp, it must lie within ``tolerance_s`` of ``now``.

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
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
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


def _hmac(secret: str, message: bytes, algorithm: str) -> bytes:
    return hmac.new(secret.encode(), message, algorithm).digest()


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
    except ValueError:
        raise AuthError("bad_timestamp", f"timestamp {value!r} is not Unix seconds") from None


def _iso_seconds(value: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AuthError("bad_timestamp", f"timestamp {value!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# --- signing (used by tests, the load generator and anyone sending to the generic endpoint) -----------------

def sign_zendesk(secret: str, timestamp: str, body: bytes) -> str:
    return base64.b64encode(_hmac(secret, timestamp.encode() + body, "sha256")).decode()


def sign_intercom(secret: str, body: bytes) -> str:
    return "sha1=" + _hmac(secret, body, "sha1").hex()


def sign_helpscout(secret: str, body: bytes) -> str:
    return base64.b64encode(_hmac(secret, body, "sha1")).decode()


def sign_timestamped_sha256(secret: str, timestamp: str, body: bytes) -> str:
    """Chatwoot and generic: ``sha256=`` + hex HMAC-SHA256 over ``"{timestamp}.{body}"``."""
    return "sha256=" + _hmac(secret, timestamp.encode() + b"." + body, "sha256").hex()


# --- verification -----------------------------------------------------------------------------------------

def verify_zendesk(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
    signature = _require(headers, "X-Zendesk-Webhook-Signature", "missing_signature")
    timestamp = _require(headers, "X-Zendesk-Webhook-Signature-Timestamp", "missing_timestamp")
    if not hmac.compare_digest(sign_zendesk(secret, timestamp, body).encode(), signature.encode()):
        raise AuthError("bad_signature", "X-Zendesk-Webhook-Signature does not match")
    _check_time(_iso_seconds(timestamp), now, tolerance_s)


def verify_intercom(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
    signature = _require(headers, "X-Hub-Signature", "missing_signature")
    if not hmac.compare_digest(sign_intercom(secret, body).encode(), signature.lower().encode()):
        raise AuthError("bad_signature", "X-Hub-Signature does not match")


def verify_helpscout(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
    signature = _require(headers, "X-HelpScout-Signature", "missing_signature")
    if not hmac.compare_digest(sign_helpscout(secret, body).encode(), signature.encode()):
        raise AuthError("bad_signature", "X-HelpScout-Signature does not match")


def _verify_sha256_ts(prefix: str, secret: str, headers: Mapping[str, str], body: bytes, now: float,
                      tolerance_s: float) -> None:
    signature = _require(headers, f"X-{prefix}-Signature", "missing_signature")
    timestamp = _require(headers, f"X-{prefix}-Timestamp", "missing_timestamp")
    expected = sign_timestamped_sha256(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
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
    if token is not None and sent_token is not None and hmac.compare_digest(token.encode(), sent_token.encode()):
        return
    if basic is not None and authorization is not None and authorization[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("bad_signature", "Authorization is not valid basic credentials") from None
        # evaluate both comparisons so that timing does not tell which part was wrong
        ok_user = hmac.compare_digest(basic[0].encode(), user.encode())
        ok_password = hmac.compare_digest(basic[1].encode(), password.encode())
        if ok_user and ok_password:
            return
    raise AuthError("bad_signature", "token or credentials do not match")


def delivery_id(vendor: str, headers: Mapping[str, str], body: bytes) -> str:
    """The id a replay is recognised by: the vendor's delivery id where it sends one, otherwise a digest of the
    signature header and body (an exact replay repeats both)."""
    for name in ("X-Chatwoot-Delivery", "X-Satpulse-Delivery", "X-Zendesk-Webhook-Invocation-Id"):
        value = _header(headers, name)
        if value is not None:
            return f"{vendor}:{value}"
    material = "|".join(_header(headers, n) or "" for n in (
        "X-Zendesk-Webhook-Signature", "X-Zendesk-Webhook-Signature-Timestamp", "X-Hub-Signature",
        "X-HelpScout-Signature", "X-Chatwoot-Signature", "X-Satpulse-Signature", "X-Satpulse-Timestamp"))
    return f"{vendor}:" + hashlib.sha256(material.encode() + b"\0" + body).hexdigest()


class ReplayGuard:
    """Bounded set of delivery ids seen within ``ttl_s`` (LRU eviction past ``max_size``).

    :meth:`reserve` marks an id in flight (False if it was seen or is in flight); :meth:`commit` records it once
    the delivery's events are acknowledged; :meth:`release` forgets it after a failure, so the vendor's retry of
    a delivery that failed is accepted, while a replay of a delivery that succeeded is refused. In memory only:
    the service persists committed ids with adapters/replay_store.py and restores them on start."""

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
