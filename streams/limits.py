"""Size and shape limits of untrusted JSON input (ingest submissions, webhook bodies). Pure, no I/O.

Every input is checked against these before any other code looks at it, so that no later step (string
conversion, time-zone lookup, Avro encoding, producing) sees a value that can exhaust the stack or exceed the
broker's message size. The checks are iterative: they never recurse, whatever the nesting.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    too_deep; a string or key longer than ``max_text_chars`` or more than ``max_items`` values: too_large),
    else None. Never raises, never recurses."""
    stack: list[tuple[object, int, str]] = [(value, 1, "$")]
    items = 0
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if len(node) > limits.max_text_chars:
                return "too_large", f"{path} has {len(node)} characters (limit {limits.max_text_chars})"
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > limits.max_depth:
            return "too_deep", f"{path} is nested deeper than {limits.max_depth} levels"
        items += len(node)
        if items > limits.max_items:
            return "too_large", f"more than {limits.max_items} values in the document"
        if isinstance(node, dict):
            for key, child in node.items():
                if len(key) > limits.max_id_chars:
                    return "too_large", f"a key of {len(key)} characters in {path} (limit {limits.max_id_chars})"
                stack.append((child, depth + 1, f"{path}.{key}"))
        else:
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(node))
    return None
