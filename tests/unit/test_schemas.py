import io
import json
from pathlib import Path

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro.schema import fingerprint, to_parsing_canonical_form

from satpulse import codec

SCHEMAS = sorted(codec.SCHEMA_DIR.glob("*.avsc"))


def test_every_schema_is_named_in_codec() -> None:
    assert sorted(p.stem for p in SCHEMAS) == sorted(codec.SCHEMA_NAMES)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_schema_parses_with_avro(path: Path) -> None:
    schema = avro.schema.parse(path.read_text())
    assert schema.namespace == "dev.satpulse"


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_backward_compatible_with_every_previous_version(path: Path) -> None:
    """The current schema (reader) can read data written with each released version (writer)."""
    history = sorted((codec.SCHEMA_DIR / "history" / path.stem).glob("v*.avsc"))
    assert history, f"no released version of {path.stem} under schemas/history/"
    reader = avro.schema.parse(path.read_text())
    for previous in history:
        writer = avro.schema.parse(previous.read_text())
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
        assert result.compatibility is SchemaCompatibilityType.compatible, (previous.name, result.messages)


def test_checker_rejects_a_breaking_change() -> None:
    """The compatibility gate is real: a new required field without default breaks backward compatibility."""
    current = json.loads((codec.SCHEMA_DIR / "feedback_event.avsc").read_text())
    broken = dict(current, fields=[*current["fields"], {"name": "locale", "type": "string"}])
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(broken)), avro.schema.parse(json.dumps(current)))
    assert result.compatibility is SchemaCompatibilityType.incompatible


def test_single_object_encoding_roundtrip_and_header() -> None:
    record = {"reason": "missing_field", "detail": "x", "stage": "cleaner", "origin_topic": None,
              "origin_partition": None, "origin_offset": None, "origin_ref": "f:1", "payload": b"\x00\xff",
              "payload_size": 2, "payload_sha256": "ab", "failed_at": 1}
    data = codec.encode(codec.DEAD_LETTER, record)
    assert data[:2] == b"\xc3\x01" and data[2:10] == codec.schema_fingerprint(codec.DEAD_LETTER)
    assert codec.decode(data) == (codec.DEAD_LETTER, record)


def test_single_object_readable_by_the_reference_avro_library() -> None:
    """A consumer without our code: the Apache avro package decodes the body after the 10-byte header."""
    import io

    import avro.io

    record = {"event_id": "e", "rating_id": "e", "rating_version": 2, "source": "s", "channel": "chat",
              "event_time": 1_700_000_000_000, "ingest_time": 1_700_000_000_001}
    data = codec.encode(codec.FEEDBACK_EVENT, record)
    schema = avro.schema.parse((codec.SCHEMA_DIR / "feedback_event.avsc").read_text())
    decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert decoded["rating_version"] == 2 and decoded["channel"] == "chat"


@pytest.mark.parametrize("data", [b"", b"\xc3\x01", b"\xc3\x01" + b"\x00" * 8 + b"x", b"{}" * 10])
def test_decode_errors(data: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(data)


def test_messages_of_a_released_version_decode_into_the_current_schema() -> None:
    """A dead letter written with schema v1 (before payload_size existed) still decodes, the new fields at
    their defaults."""
    v1 = json.loads((codec.SCHEMA_DIR / "history" / "dead_letter" / "v1.avsc").read_text())
    record = {"reason": "missing_field", "detail": "x", "stage": "cleaner", "origin_topic": "in",
              "origin_partition": 0, "origin_offset": 7, "origin_ref": None, "payload": b"{}", "failed_at": 1}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(v1), record)
    header = int(fingerprint(to_parsing_canonical_form(v1), "CRC-64-AVRO"), 16).to_bytes(8, "little")
    name, decoded = codec.decode(b"\xc3\x01" + header + body.getvalue())
    assert name == codec.DEAD_LETTER
    assert decoded == {**record, "payload_size": None, "payload_sha256": None}
