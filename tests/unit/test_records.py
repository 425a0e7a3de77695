"""The typed records (domain/records.py) and the Avro schemas describe the same events, field by field."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import pytest

from domain.clean import check_clean_record, clean
from domain.records import ID_FIELDS, FeedbackEvent, SecondaryAnswer, TicketEvent
from satpulse import codec

_AVRO_OF = {str: "string", int: "long", float: "double", bool: "boolean"}


def _avro_types(annotation: object) -> tuple[set[str], bool]:
    """(Avro type names, nullable) that a record field's annotation stands for."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        names = set().union(*(_avro_types(a)[0] for a in args if a is not type(None)))
        return names, type(None) in args
    if origin is Literal:
        return {"enum"}, False
    if origin is list:
        return {"array"}, False
    assert isinstance(annotation, type)
    return {_AVRO_OF[annotation]}, False


def _schema_types(avro_type: Any) -> tuple[set[str], bool]:
    if isinstance(avro_type, list):
        names = set().union(*(_schema_types(t)[0] for t in avro_type if t != "null"))
        return names, "null" in avro_type
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "long" and avro_type.get("logicalType") == "timestamp-millis":
            return {"long"}, False
        return {kind}, False
    return {avro_type}, False


@pytest.mark.parametrize(("record_type", "schema"), [(FeedbackEvent, codec.FEEDBACK_EVENT),
                                                     (TicketEvent, codec.TICKET_EVENT)])
def test_each_record_type_has_exactly_the_fields_and_types_of_its_avro_schema(record_type: type,
                                                                              schema: str) -> None:
    fields = {f["name"]: f["type"] for f in codec.schema_json(schema)["fields"]}
    hints = typing.get_type_hints(record_type)
    assert set(hints) == set(fields)
    for name, annotation in hints.items():
        assert _avro_types(annotation) == _schema_types(fields[name]), name


def test_secondary_answers_match_the_nested_avro_record() -> None:
    field = next(f for f in codec.schema_json(codec.FEEDBACK_EVENT)["fields"] if f["name"] == "secondary_answers")
    nested = {f["name"]: f["type"] for f in field["type"]["items"]["fields"]}
    hints = typing.get_type_hints(SecondaryAnswer)
    assert set(hints) == set(nested)
    for name, annotation in hints.items():
        assert _avro_types(annotation) == _schema_types(nested[name]), name


def test_every_text_field_but_the_comment_is_bounded_like_an_id() -> None:
    assert "comment" not in ID_FIELDS
    assert {"event_id", "rating_id", "ticket_id", "agent", "priority", "status", "survey_id"} <= set(ID_FIELDS)
    record = clean({"kind": "ticket", "event_id": "e", "source": "s", "channel": "chat", "ticket_id": "t",
                    "status": "created", "event_time": 1_700_000_000_000}, 1_700_000_000_000, 0).record
    for name in ID_FIELDS:
        if name in record:
            with pytest.raises(ValueError, match=name):
                check_clean_record({**record, name: "x" * 10_000})
