"""Topic payload encoding: Avro single-object encoding (Avro spec, "Single-object encoding").

Each message is ``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint (little endian) + the Avro binary
body. A downstream consumer needs only the ``.avsc`` files in ``schemas/`` (any Avro library: Java's
``BinaryMessageDecoder``, fastavro, avro) — no schema registry — and the fingerprint says which schema
version wrote the message, so readers can pick the writer schema and resolve it against their own.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from functools import cache
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from satpulse.avro_writer import Writer, compile_writer
from schemas import SCHEMA_DIR

MAGIC = b"\xc3\x01"

FEEDBACK_EVENT = "feedback_event"
TICKET_EVENT = "ticket_event"
DEAD_LETTER = "dead_letter"
WINDOW_METRIC = "window_metric"
SCHEMA_NAMES: tuple[str, ...] = (FEEDBACK_EVENT, TICKET_EVENT, DEAD_LETTER, WINDOW_METRIC)


class DecodeError(ValueError):
    """The bytes are not a single-object-encoded record of a known schema."""


@cache
def schema_json(name: str) -> dict[str, Any]:
    """The current schema ``schemas/{name}.avsc`` as JSON. Raises FileNotFoundError for an unknown name."""
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    return loaded


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


@cache
def _parsed(name: str) -> Any:
    # Timestamps stay plain epoch-millisecond ints in Python (same bytes on the wire, no datetime cost).
    return fastavro.parse_schema(_without_logical_types(schema_json(name)))


@cache
def schema_fingerprint(name: str) -> bytes:
    """CRC-64-AVRO fingerprint of the schema's parsing canonical form, little endian, 8 bytes."""
    return _fingerprint_of(schema_json(name))


def _fingerprint_of(schema: dict[str, Any]) -> bytes:
    return int(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"), 16).to_bytes(8, "little")


@cache
def _writers() -> dict[bytes, tuple[str, Any]]:
    """Fingerprint -> (schema name, parsed writer schema) of the current and every released version
    (``schemas/history/{name}/v*.avsc``), so that messages written by an older version still decode."""
    writers: dict[bytes, tuple[str, Any]] = {}
    for name in SCHEMA_NAMES:
        for path in sorted((SCHEMA_DIR / "history" / name).glob("v*.avsc")):
            released = json.loads(path.read_text())
            writers[_fingerprint_of(released)] = (name, fastavro.parse_schema(_without_logical_types(released)))
        writers[schema_fingerprint(name)] = (name, _parsed(name))
    return writers


@cache
def _writer(name: str) -> Writer:
    return compile_writer(schema_json(name))


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    """Encode one record. Raises ValueError or TypeError when it does not fit the schema."""
    out = [MAGIC, schema_fingerprint(name)]
    try:
        _writer(name)(record, out)
    except KeyError as exc:
        raise ValueError(f"{name}: field {exc} is missing") from None
    except (AttributeError, struct.error, OverflowError) as exc:
        raise TypeError(f"{name}: a value does not fit the schema: {exc}") from None
    return b"".join(out)


def decode(data: bytes, expected: str | None = None) -> tuple[str, dict[str, Any]]:
    """Decode one message into (schema name, record), written by the current or any released version of the
    schema (resolved to the current one: fields added since take their defaults). Raises DecodeError on a bad
    header or body."""
    if len(data) < 10 or data[:2] != MAGIC:
        raise DecodeError("not Avro single-object encoding (missing C3 01 header)")
    writer = _writers().get(data[2:10])
    if writer is None:
        raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
    name, writer_schema = writer
    if expected is not None and name != expected:
        raise DecodeError(f"expected {expected}, got {name}")
    reader_schema = _parsed(name)
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[10:]), writer_schema,
                                            None if writer_schema is reader_schema else reader_schema,
                                            return_record_name=False)
    except Exception as exc:  # fastavro raises EOFError, ValueError, ... on corrupt bodies
        raise DecodeError(f"corrupt {name} body: {exc}") from exc
    if not isinstance(record, dict):
        raise DecodeError(f"{name} body is not a record")
    return name, record

