"""The typed records of the pipeline: clean feedback and ticket events as the cleaner produces them and the
window stage reads them. Shaped exactly like ``schemas/feedback_event.avsc`` / ``ticket_event.avsc``
(tests/unit/test_records.py checks field by field), so the codec encodes them as they are.

They are ``TypedDict``: plain dicts at run time (no conversion on the hot path), checked by mypy.
"""

from __future__ import annotations

import types
import typing
from typing import Literal, TypedDict, Union

TicketStatus = Literal["created", "first_response", "resolved", "reopened", "closed"]


class CommonFields(TypedDict):
    """What every clean event has. Times are epoch milliseconds."""

    event_id: str
    source: str
    channel: str  # normalised: one of domain.clean.CHANNELS
    event_time: int
    ingest_time: int
    agent: str | None
    team: str | None
    category: str | None
    product: str | None
    customer_id: str | None


class SecondaryAnswer(TypedDict):
    """One answer to a survey question beside the CSAT question."""

    question_id: str
    native_value: str
    native_scale: str
    score: float | None
    satisfied: bool | None


class FeedbackEvent(CommonFields):
    """One version of a rating (``rating_id``, ``rating_version``: the highest version counts) and/or comment."""

    rating_id: str
    rating_version: int
    ticket_id: str | None
    native_value: str | None
    native_scale: str | None
    score: float | None  # 1.0-5.0
    satisfied: bool | None
    comment: str | None
    sentiment: float | None  # -1.0-1.0
    sentiment_label: str | None
    sentiment_model: str | None
    survey_id: str | None
    secondary_answers: list[SecondaryAnswer]


class TicketEvent(CommonFields):
    """One step in a support case's lifecycle."""

    ticket_id: str
    status: TicketStatus
    priority: str | None  # normalised: low, medium, high, urgent, or the source's own value


CleanEvent = FeedbackEvent | TicketEvent
FREE_TEXT_FIELDS = frozenset({"comment"})  # bounded by ingest_max_text_chars; every other text by ingest_max_id_chars


def _is_text(annotation: object) -> bool:
    """True for ``str`` and ``str | None`` (and Literals of strings)."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return len(args) == 1 and _is_text(args[0])
    return False


def text_fields(record_type: type) -> tuple[str, ...]:
    """The names of ``record_type``'s text fields (top level), in declaration order."""
    return tuple(name for name, annotation in typing.get_type_hints(record_type).items() if _is_text(annotation))


# text fields of any clean event that are bounded like ids (ids, dimension values, scales, labels)
ID_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(
    name for record_type in (FeedbackEvent, TicketEvent) for name in text_fields(record_type)
    if name not in FREE_TEXT_FIELDS))
