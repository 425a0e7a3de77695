"""satpulse.avro_writer against fastavro's reference writer: the same bytes for any record of each schema."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satpulse import codec
from satpulse.avro_writer import compile_writer, encode_long

FEEDBACK = {"event_id": "e", "rating_id": "e", "rating_version": 2, "source": "s", "channel": "chat",
            "event_time": 1_700_000_000_000, "ingest_time": 1_700_000_000_001}  # every other field has a default


def values(schema: Any) -> st.SearchStrategy[Any]:
    """Any value of ``schema`` (the subset the writer supports), written independently of the writer."""
    if isinstance(schema, list):
        return st.one_of(st.none(), values(schema[1]))
    kind = schema if isinstance(schema, str) else schema["type"]
    leaves: dict[str, st.SearchStrategy[Any]] = {
        "string": st.text(), "bytes": st.binary(), "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1), "long": st.integers(-(2**63), 2**63 - 1),
        "double": st.floats(allow_nan=False)}
    if kind in leaves:
        return leaves[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=4)
    assert kind == "record", kind
    return st.fixed_dictionaries({f["name"]: values(f["type"]) for f in schema["fields"]})


def reference(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(codec.schema_json(name)), record)
    return buf.getvalue()


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_same_bytes_as_fastavro_and_decodes(name: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(values(codec.schema_json(name)))
    def check(record: dict[str, Any]) -> None:
        encoded = codec.encode(name, record)
        assert encoded[10:] == reference(name, record)
        assert codec.decode(encoded, name) == (name, record)

    check()


@given(st.integers(-(2**63), 2**63 - 1))
def test_long_is_zigzag_varint(n: int) -> None:
    z, expected = (n << 1) ^ (n >> 63), bytearray()
    while True:
        expected.append((z & 0x7F) | (0x80 if z > 0x7F else 0))
        z >>= 7
        if not z:
            break
    assert encode_long(n) == bytes(expected)


@pytest.mark.parametrize(("field", "value"), [("channel", 1), ("score", "high"), ("rating_version", 1.5),
                                              ("event_time", 2**64)])
def test_a_value_that_does_not_fit_raises_type_error(field: str, value: Any) -> None:
    with pytest.raises(TypeError):
        codec.encode(codec.FEEDBACK_EVENT, {**FEEDBACK, field: value})


def test_missing_fields_take_their_defaults_or_raise() -> None:
    assert codec.decode(codec.encode(codec.FEEDBACK_EVENT, FEEDBACK))[1]["ticket_id"] is None
    with pytest.raises(ValueError, match="rating_id"):
        codec.encode(codec.FEEDBACK_EVENT, {"event_id": "e"})


def test_unsupported_types_fail_when_compiled() -> None:
    for schema in (["null", "string", "long"], {"type": "map", "values": "string"}, "float"):
        with pytest.raises(ValueError):
            compile_writer(schema)
