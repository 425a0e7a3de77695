"""Shared helpers of the vendor parsers (adapters/vendors/<vendor>.py): reading a vendor's JSON defensively and
building raw submissions (docs/ingest-format.md). Pure functions, no I/O.

A payload that cannot be what the vendor sends raises :class:`PayloadError` with the reason (optional parts of
the wrong JSON type are ignored). Field values are passed on as the vendor writes them (timestamps as ISO text or
epoch seconds); the cleaner validates and normalises them. Event ids are derived from the vendor's own ids, so a
vendor's retry produces the same ids and is deduplicated downstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.vendors.declaration import Submission

__all__ = ["PayloadError", "Submission", "as_object", "make_submission", "optional_list", "optional_object",
           "required", "secondary_ratings", "text_of", "version_of"]


class PayloadError(ValueError):
    """The body is not a payload this vendor sends; the message says why (answered with HTTP 400)."""


def as_object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def optional_object(parent: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = parent.get(name)
    return value if isinstance(value, dict) else {}


def optional_list(parent: Mapping[str, Any], name: str) -> list[Any]:
    value = parent.get(name)
    return value if isinstance(value, list) else []


def required(parent: Mapping[str, Any], name: str, what: str) -> Any:
    value = parent.get(name)
    if value is None or value == "":
        raise PayloadError(f"{what}.{name} is required")
    return value


def text_of(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def version_of(*candidates: object) -> int:
    """Edit version of a rating: the epoch seconds of its last modification (newest wins downstream)."""
    for value in candidates:
        if value is None or value == "":
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value if value < 1e11 else value / 1000)
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp())
    return 0


def make_submission(**fields: Any) -> Submission:
    """Drop absent fields so that the submission stays small and the cleaner sees 'absent', not 'null'."""
    return {k: v for k, v in fields.items() if v is not None and v != ""}


def secondary_ratings(answers: list[tuple[str, object, str]]) -> list[dict[str, Any]] | None:
    """Answers to a survey's questions other than its CSAT question, as ``secondary_ratings`` entries
    ``{question_id, rating_value, rating_scale}`` (None when there are none).

    They ride on the CSAT submission and are never a rating of their own: the cleaner normalises them into the
    clean event's ``secondary_answers``, which no window counts (docs/adapters.md, "Secondary survey
    questions")."""
    out = [{"question_id": q, "rating_value": v, "rating_scale": scale} for q, v, scale in answers if v is not None]
    return out or None
