"""Webhook authentication schemes, declared by each vendor (adapters/vendors/). Pure, no I/O.

A vendor declares one :class:`Authentication`: :class:`HmacSignature` (an HMAC of the body, and of a timestamp
where the vendor signs one, in a header; the formula is the vendor's ``sign`` function) or
:class:`TokenOrBasicAuth` (Freshdesk signs nothing). Each names its secret settings and its header names, and
gives a :data:`Verifier` built from the settings.

Every check raises :class:`AuthError` with a reason code from :data:`AUTH_REASONS`, and nothing else, whatever
the header values (aiohttp hands over header bytes that are not UTF-8 as lone surrogates: they are compared as
bytes, never decoded twice); comparisons use :func:`hmac.compare_digest` (constant time). Where a vendor signs a
timestamp, it must lie within ``tolerance_s`` of ``now``. :class:`ReplayGuard` holds the delivery ids a replay is
recognised by (each vendor's :class:`adapters.vendors.declaration.DeliveryIdentity`).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from satpulse.settings import Settings

AUTH_REASONS: tuple[str, ...] = (
    "missing_signature",  # the signature (or token / credentials) header is absent
    "bad_signature",  # present but does not match
    "missing_timestamp",  # a vendor that signs a timestamp sent none
    "bad_timestamp",  # the timestamp header cannot be read
    "stale_timestamp",  # further from now than the tolerance
    "not_configured",  # no secret configured for this vendor: every request is refused
)

Verifier = Callable[[Mapping[str, str], bytes, float], None]  # headers, body, now; raises AuthError


class AuthError(ValueError):
    """The request is not authentic; ``reason`` is one of :data:`AUTH_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in AUTH_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def utf8(text: str) -> bytes:
    """``text`` as bytes; never raises (lone surrogates, e.g. undecodable header bytes, are kept as they are)."""
    return text.encode("utf-8", "surrogatepass")


def hmac_digest(secret: str, message: bytes, algorithm: str) -> bytes:
    """HMAC of ``message`` keyed with ``secret`` (UTF-8) with ``algorithm`` (``sha1``, ``sha256``)."""
    return hmac.new(utf8(secret), message, algorithm).digest()


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (aiohttp's CIMultiDict is, a plain dict in tests may not be), stripped;
    None when absent or blank."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return None if value is None or not value.strip() else value.strip()


def _require(headers: Mapping[str, str], name: str, reason: str) -> str:
    value = header_value(headers, name)
    if value is None:
        raise AuthError(reason, f"header {name} is missing")
    return value


def secret_setting(settings: Settings, name: str) -> str | None:
    """The secret setting ``name`` (a SecretStr field of Settings) as text; None when unset or empty. Raises
    AttributeError naming a setting that does not exist."""
    value: Any = getattr(settings, name)
    return None if value is None else str(value.get_secret_value()) or None


@dataclass(frozen=True, slots=True)
class TimestampFormat:
    """How a vendor writes the timestamp it signs: ``read`` raises AuthError bad_timestamp; ``write`` is for
    senders (tests, the load generator)."""

    read: Callable[[str], float]
    write: Callable[[float], str]


def _read_unix_seconds(value: str) -> float:
    try:
        return float(int(value))
    except (ValueError, OverflowError):  # OverflowError: an integer beyond the range of a float
        raise AuthError("bad_timestamp", f"timestamp {value[:64]!r} is not Unix seconds") from None


def _read_iso_8601(value: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AuthError("bad_timestamp", f"timestamp {value[:64]!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


UNIX_SECONDS = TimestampFormat(_read_unix_seconds, lambda now: str(int(now)))
ISO_8601 = TimestampFormat(_read_iso_8601,
                           lambda now: datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


class Authentication(Protocol):
    """How a vendor's requests are authenticated."""

    @property
    def header_names(self) -> tuple[str, ...]:
        """Every header the check reads."""
        ...

    @property
    def timestamp_header(self) -> str | None:
        """The header of the signed timestamp, if the vendor signs one."""
        ...

    @property
    def secret_settings(self) -> tuple[str, ...]:
        """The Settings fields the check reads."""
        ...

    def verifier(self, settings: Settings, tolerance_s: float) -> Verifier:
        """The check with the secrets of ``settings``; without them it refuses everything (not_configured).
        Raises AttributeError for a secret setting that Settings does not have."""
        ...

    def signed_headers(self, secret: str, body: bytes, now: float) -> dict[str, str]:
        """The headers a sender with ``secret`` attaches to ``body`` at ``now`` (tests, the load generator)."""
        ...


Sign = Callable[[str, str | None, bytes], str]  # secret, signed timestamp (None if the vendor signs none), body


def sign_timestamp_dot_body_sha256(secret: str, timestamp: str | None, body: bytes) -> str:
    """Chatwoot's scheme, also ours (generic): ``sha256=`` + hex HMAC-SHA256 over ``"{timestamp}.{body}"``."""
    return "sha256=" + hmac_digest(secret, utf8(timestamp or "") + b"." + body, "sha256").hex()


@dataclass(frozen=True, slots=True)
class HmacSignature:
    """A signature header computed by ``sign`` from the secret setting ``secret_setting``, over the body and,
    with ``timestamp_header``, a timestamp within the tolerance (``timestamp_format``). Hex signatures are
    compared case-insensitively (``hex_signature``), base64 ones exactly. Checks, in this order: signature
    header present (missing_signature), timestamp header present (missing_timestamp), signature matches
    (bad_signature), timestamp readable (bad_timestamp) and within the tolerance (stale_timestamp)."""

    secret_setting: str
    signature_header: str
    sign: Sign
    timestamp_header: str | None = None
    timestamp_format: TimestampFormat = UNIX_SECONDS
    hex_signature: bool = False

    @property
    def header_names(self) -> tuple[str, ...]:
        return (self.signature_header,) + ((self.timestamp_header,) if self.timestamp_header else ())

    @property
    def secret_settings(self) -> tuple[str, ...]:
        return (self.secret_setting,)

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float) -> None:
        """Raises AuthError unless ``headers`` carry a valid signature of ``body`` made with ``secret``."""
        signature = _require(headers, self.signature_header, "missing_signature")
        timestamp = (_require(headers, self.timestamp_header, "missing_timestamp")
                     if self.timestamp_header else None)
        sent = signature.lower() if self.hex_signature else signature
        if not hmac.compare_digest(self.sign(secret, timestamp, body).encode(), utf8(sent)):
            raise AuthError("bad_signature", f"{self.signature_header} does not match")
        if timestamp is not None:
            signed_at = self.timestamp_format.read(timestamp)
            if abs(now - signed_at) > tolerance_s:
                raise AuthError("stale_timestamp",
                                f"signed at {signed_at:.0f}, now {now:.0f}: more than {tolerance_s:.0f} s apart")

    def verifier(self, settings: Settings, tolerance_s: float) -> Verifier:
        secret = secret_setting(settings, self.secret_setting)

        def verify(headers: Mapping[str, str], body: bytes, now: float) -> None:
            if secret is None:
                raise AuthError("not_configured", "no secret is configured for this vendor")
            self.verify(secret, headers, body, now, tolerance_s)
        return verify

    def signed_headers(self, secret: str, body: bytes, now: float) -> dict[str, str]:
        if self.timestamp_header is None:
            return {self.signature_header: self.sign(secret, None, body)}
        timestamp = self.timestamp_format.write(now)
        return {self.signature_header: self.sign(secret, timestamp, body), self.timestamp_header: timestamp}


@dataclass(frozen=True, slots=True)
class TokenOrBasicAuth:
    """No signature exists (Freshdesk): a shared token in ``token_header`` (setting ``token_setting``) or HTTP
    basic credentials (``user_setting``, ``password_setting``), each compared in constant time."""

    token_setting: str
    user_setting: str
    password_setting: str
    token_header: str
    timestamp_header: None = None

    @property
    def header_names(self) -> tuple[str, ...]:
        return (self.token_header, "Authorization")

    @property
    def secret_settings(self) -> tuple[str, ...]:
        return (self.token_setting, self.user_setting, self.password_setting)

    def verify(self, token: str | None, basic: tuple[str, str] | None, headers: Mapping[str, str]) -> None:
        """Raises AuthError unless ``headers`` carry ``token`` or the ``basic`` (user, password) credentials."""
        if token is None and basic is None:
            raise AuthError("not_configured", "no token or basic-auth credentials configured")
        sent_token = header_value(headers, self.token_header)
        authorization = header_value(headers, "Authorization")
        if sent_token is None and authorization is None:
            raise AuthError("missing_signature", f"neither {self.token_header} nor Authorization is present")
        if token is not None and sent_token is not None and hmac.compare_digest(utf8(token), utf8(sent_token)):
            return
        if basic is not None and authorization is not None and authorization[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
            except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
                raise AuthError("bad_signature", "Authorization is not valid basic credentials") from None
            # evaluate both comparisons so that timing does not tell which part was wrong
            ok_user = hmac.compare_digest(utf8(basic[0]), utf8(user))
            ok_password = hmac.compare_digest(utf8(basic[1]), utf8(password))
            if ok_user and ok_password:
                return
        raise AuthError("bad_signature", "token or credentials do not match")

    def verifier(self, settings: Settings, tolerance_s: float) -> Verifier:
        token = secret_setting(settings, self.token_setting)
        user: Any = getattr(settings, self.user_setting)
        password = secret_setting(settings, self.password_setting)
        basic = (str(user), password) if user and password else None

        def verify(headers: Mapping[str, str], body: bytes, now: float) -> None:
            self.verify(token, basic, headers)
        return verify

    def signed_headers(self, secret: str, body: bytes, now: float) -> dict[str, str]:
        return {self.token_header: secret}
