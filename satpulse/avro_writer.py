"""Avro binary encoding (Avro 1.11 spec, "Binary Encoding") for the subset of types our schemas use, compiled
once per schema: a record into one generated function that writes its primitive fields inline, other types
into nested closures. Pure.

Why not fastavro's ``schemaless_writer``: it re-resolves the schema and every union branch per call, which made
encoding the largest single cost of the clean stage (8-12 us per feedback event on this machine; this writer
needs about 40 % of that). The bytes are the same (tests/unit/test_avro_writer.py compares them with
fastavro's for generated records); decoding stays with fastavro.

Supported: null, boolean, int, long, double, string, bytes, enum, array, record (a missing field is written
with its default), and unions of null with one other type. A schema using anything else fails when
compiled (:class:`ValueError`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

Writer = Callable[[Any, list[bytes]], None]  # appends the encoding of a value to a list of parts
_pack_double = struct.Struct("<d").pack
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


_LARGE: dict[int, bytes] = {}  # recent large values (timestamps repeat within a batch); cleared when full
_LARGE_MAX = 4096


def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = {n: _zigzag_varint(n) for n in range(-64, 64)}  # one byte each: lengths, indexes, flags


def encode_long(n: int) -> bytes:
    """Zig-zag varint of an int or long. Raises TypeError for a non-integer, OverflowError outside 64 bits."""
    small = _SMALL.get(n)
    if small is not None:
        return small
    large = _LARGE.get(n)
    if large is not None:
        return large
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    if len(_LARGE) >= _LARGE_MAX:
        _LARGE.clear()
    large = _LARGE[n] = _zigzag_varint(n)
    return large


def _write_string(value: str, out: list[bytes]) -> None:
    data = value.encode()
    out.append(encode_long(len(data)))
    out.append(data)


def _write_bytes(value: bytes, out: list[bytes]) -> None:
    out.append(encode_long(len(value)))
    out.append(bytes(value))


def _write_long(value: int, out: list[bytes]) -> None:
    out.append(encode_long(value))


def _write_double(value: float, out: list[bytes]) -> None:
    out.append(_pack_double(value))


def _write_boolean(value: bool, out: list[bytes]) -> None:
    out.append(b"\x01" if value else b"\x00")


_PRIMITIVES: dict[str, Writer] = {"string": _write_string, "bytes": _write_bytes, "long": _write_long,
                                  "int": _write_long, "double": _write_double, "boolean": _write_boolean}


def compile_writer(schema: Any) -> Writer:
    """A writer for values of ``schema`` (parsed JSON of an .avsc). Raises ValueError for unsupported types.
    The writer raises AttributeError, TypeError, KeyError (a missing field without default), OverflowError or
    struct.error for a value that does not fit; :func:`satpulse.codec.encode` turns them into ValueError and
    TypeError."""
    if isinstance(schema, list):
        if len(schema) != 2 or schema[0] != "null":
            raise ValueError(f"only unions of null and one type are supported, not {schema}")
        inner = compile_writer(schema[1])

        def write_nullable(value: Any, out: list[bytes]) -> None:
            if value is None:
                out.append(b"\x00")
            else:
                out.append(b"\x02")
                inner(value, out)
        return write_nullable
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "enum":
        indexes = {symbol: encode_long(i) for i, symbol in enumerate(schema["symbols"])}

        def write_enum(value: str, out: list[bytes]) -> None:
            out.append(indexes[value])
        return write_enum
    if kind == "array":
        item = compile_writer(schema["items"])

        def write_array(value: list[Any], out: list[bytes]) -> None:
            if value:  # one block of every item, then the empty block that ends the array
                out.append(encode_long(len(value)))
                for element in value:
                    item(element, out)
            out.append(b"\x00")
        return write_array
    if kind == "record":
        return _compile_record(schema)
    raise ValueError(f"Avro type {kind!r} is not supported by this writer")


# how a record's writer writes one field value ``v`` of a primitive type, inline (``ap`` = out.append)
_INLINE = {
    "string": "d = v.encode(); ap(encode_long(len(d))); ap(d)",
    "long": "ap(encode_long(v))",
    "int": "ap(encode_long(v))",
    "double": "ap(pack_double(v))",
    "boolean": "ap(b'\\x01' if v else b'\\x00')",
}


def _field_code(index: int, name: str, schema: Any) -> list[str]:
    """Source lines writing ``value[name]``: inline for primitives and nullable primitives, else a call of the
    field's compiled writer ``w<index>``."""
    read = f"v = value[{name!r}]"
    if isinstance(schema, str) and schema in _INLINE:
        return [read, _INLINE[schema]]
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null" and isinstance(schema[1], str) \
            and schema[1] in _INLINE:
        return [read, "if v is None:", "    ap(b'\\x00')", "else:", "    ap(b'\\x02')", f"    {_INLINE[schema[1]]}"]
    return [read, f"w{index}(v, out)"]


def _compile_record(schema: Mapping[str, Any]) -> Writer:
    """A record's writer as one generated function (one Python call per record instead of one per field: this
    is the clean stage's innermost loop). A missing field is written with the schema's default; without one,
    KeyError."""
    fields = schema["fields"]
    defaults = {f["name"]: f["default"] for f in fields if "default" in f}
    namespace: dict[str, Any] = {"encode_long": encode_long, "pack_double": _pack_double}
    body = []
    for i, f in enumerate(fields):
        namespace[f"w{i}"] = compile_writer(f["type"])
        body += _field_code(i, f["name"], f["type"])
    source = "\n".join(["def write_fields(value, out):", "    ap = out.append", *(f"    {line}" for line in body)])
    exec(source, namespace)  # the source is built from the schema's field names only, never from data
    write_fields: Writer = namespace["write_fields"]

    def write_record(value: Mapping[str, Any], out: list[bytes]) -> None:
        start = len(out)
        try:
            write_fields(value, out)
        except KeyError:  # a field left out: write it again, with the schema's defaults
            del out[start:]
            write_fields({**defaults, **value}, out)
    return write_record
