"""Size and shape limits of untrusted JSON input (ingest submissions, webhook bodies). Pure, no I/O.

Every input is checked against these before any other code looks at it, so that no later step (string
conversion, time-zone lookup, Avro encoding, producing) sees a value that can exhaust the stack or exceed the
broker's message size. The checks are iterative: they never recurse, whatever the nesting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LIMIT_REASONS = ("too_large", "too_deep")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one JSON input. Defaults keep a clean event (every text field at its bound) far below Kafka's
    default 1 MB message size."""

    max_payload_bytes: int = 512 * 1024  # a raw submission or webhook body
    max_depth: int = 16  # objects and arrays nested in each other (the top-level object is depth 1)
    max_text_chars: int = 16_384  # any string: comments and other free text
    max_id_chars: int = 256  # ids, dimension values, scales, time zones (checked where they are read)
    max_items: int = 10_000  # values in the whole document (object members and array elements)
    max_event_bytes: int = 256 * 1024  # an encoded clean event


DEFAULT_LIMITS = Limits()


def payload_problem(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str] | None:
    """(reason, detail) when the raw bytes are over ``max_payload_bytes``, else None."""
    if len(payload) > limits.max_payload_bytes:
        return "too_large", f"payload of {len(payload)} bytes is over the limit of {limits.max_payload_bytes}"
    return None


def value_problem(value: object, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str] | None:
    """(reason, detail) of the first limit a parsed JSON value breaks (nesting deeper than ``max_depth``:
    too_deep; a string longer than ``max_text_chars``, a key longer than ``max_id_chars`` or more than
    ``max_items`` values: too_large), else None. The detail names the top-level field. Never raises, never
    recurses."""
    if isinstance(value, str):
        return _text_problem(value, "$", limits)
    if not isinstance(value, dict | list):
        return None
    if isinstance(value, dict) and len(value) <= limits.max_items:  # fast path: a flat object, the usual case
        max_text, max_key = limits.max_text_chars, limits.max_id_chars
        flat = True
        for key, child in value.items():
            kind = type(child)
            if len(key) > max_key or (kind is str and len(child) > max_text):
                flat = False
                break
            if kind is dict or kind is list:
                flat = False
                break
        if flat:
            return None
    stack: list[tuple[dict[str, Any] | list[Any], int, str]] = [(value, 1, "$")]
    items = 0
    while stack:
        node, depth, field = stack.pop()
        if depth > limits.max_depth:
            return "too_deep", f"{field} is nested deeper than {limits.max_depth} levels"
        items += len(node)
        if items > limits.max_items:
            return "too_large", f"more than {limits.max_items} values in the document"
        if isinstance(node, dict):
            for key in node:
                if len(key) > limits.max_id_chars:
                    return "too_large", f"a key of {len(key)} characters in {field} (limit {limits.max_id_chars})"
            children: Iterable[tuple[str, Any]] = node.items() if depth == 1 else ((field, v) for v in node.values())
        else:
            children = ((field, v) for v in node)
        for name, child in children:
            if isinstance(child, str):
                if len(child) > limits.max_text_chars:
                    return _text_problem(child, name, limits)
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1, name))
    return None


def _text_problem(text: str, field: str, limits: Limits) -> tuple[str, str] | None:
    if len(text) > limits.max_text_chars:
        return "too_large", f"{field[:64]} has {len(text)} characters (limit {limits.max_text_chars})"
    return None
