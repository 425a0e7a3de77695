"""Personal data in submissions, handled before anything is published. Pure functions, no I/O.

- ``redact_personal_data`` (setting): e-mail addresses, phone numbers and card-like numbers (13-19 digits that
  pass the Luhn check) in ``comment`` are replaced by ``[email]``, ``[phone]``, ``[card]``.
- ``pseudonymisation_key`` (SecretStr setting): ``customer_id`` becomes ``HMAC-SHA256(key, customer_id)`` in hex,
  stable for one key (the same customer keeps one id) and not reversible without it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by single spaces or dashes (card numbers as people type them)
_CARD = re.compile(r"(?<![\d])(?:\d[ \-]?){12,18}\d(?![\d])")
# international or national phone numbers: optional +, 7-15 digits with spaces, dots, dashes, parentheses
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d ().\-]{5,18}\d(?![\w])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = int(char)
        if index % 2 == 1:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else match.group(0)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return text
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()) or (re.fullmatch(r"[\d.]+", text) and text.count(".") == 1):
        return text  # a date or a decimal number, not a phone number
    return "[phone]"


def redact(text: str) -> str:
    """Replace e-mail addresses, Luhn-valid card numbers and phone numbers (in that order) in ``text``."""
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


def pseudonymise(value: str, key: SecretStr) -> str:
    return hmac.new(key.get_secret_value().encode(), value.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    redact: bool = False
    key: SecretStr | None = None

    def apply(self, submission: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``submission`` with the policy applied (the input is left unchanged)."""
        if not self.redact and self.key is None:
            return submission
        out = dict(submission)
        if self.redact and isinstance(out.get("comment"), str):
            out["comment"] = redact(out["comment"])
        if self.key is not None and out.get("customer_id") not in (None, ""):
            out["customer_id"] = pseudonymise(str(out["customer_id"]), self.key)
        return out
