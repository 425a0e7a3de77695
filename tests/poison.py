"""A corpus of hostile ingest payloads: each one, published once, must end as exactly one dead letter (never a
crash, a stall or a clean event). Shared by the unit tests of the clean stage and the worker test on the real
broker."""

from __future__ import annotations

import json
from typing import Any

BASE: dict[str, Any] = {"kind": "feedback", "event_id": "p", "source": "poison", "channel": "chat",
                        "event_time": 1_700_000_000_000, "rating_value": 5, "rating_scale": "1-5"}
TICKET: dict[str, Any] = {"kind": "ticket", "event_id": "p", "ticket_id": "t", "status": "created",
                          "source": "poison", "channel": "email", "event_time": 1_700_000_000_000}
COMMON = ("kind", "event_id", "source", "channel", "event_time", "timezone", "agent", "team", "category",
          "product", "customer_id", "ticket_id")
FIELDS = {  # the fields the cleaner reads, by kind
    "feedback": (*COMMON, "rating_id", "rating_value", "rating_scale", "rating_version", "comment", "sentiment",
                 "sentiment_label", "sentiment_model", "survey_id", "secondary_ratings"),
    "ticket": (*COMMON, "status", "priority"),
}
MESSAGE_BYTES = 1_000_000  # the broker's default limit is 1,048,588 bytes per message


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _with(base: dict[str, Any], field: str, raw_json: str) -> bytes:
    """``base`` with ``field`` set to a raw JSON text (which json.dumps could not produce: deep, NaN, ...)."""
    others = json.dumps({k: v for k, v in base.items() if k != field})
    return (others[:-1] + f', "{field}": {raw_json}}}').encode()


def _big(n: int) -> str:
    return json.dumps("x" * n)


def poison_corpus() -> list[tuple[str, bytes]]:
    """(name, payload) of every hostile input; every payload is below :data:`MESSAGE_BYTES`."""
    corpus: list[tuple[str, bytes]] = []
    for base in (BASE, TICKET):
        kind = base["kind"]
        for field in FIELDS[kind]:
            corpus.append((f"{kind}.{field} nested 1,000 deep", _with(base, field, _nested(1_000))))
            corpus.append((f"{kind}.{field} nested 20 deep", _with(base, field, _nested(20))))
            corpus.append((f"{kind}.{field} of ~1 MB", _with(base, field, _big(MESSAGE_BYTES - 2_000))))
            corpus.append((f"{kind}.{field} an object", _with(base, field, '{"a": {"b": 1}}')))
        corpus.append((f"{kind} nested 5,000 deep (beyond the parser's own limit)",
                       _with(base, "agent", _nested(5_000))))
    for zone in ("America", "America/", "Europe", "../../../etc/passwd", "/etc/localtime", "x" * 300,
                 "Europe/Berlin\u0000", "posixrules/../UTC", "Etc", "right"):
        corpus.append((f"timezone {zone[:20]!r}", json.dumps({**BASE, "event_time": "2026-01-01T10:00:00",
                                                              "timezone": zone}).encode()))
    for version in ("-1", "1.5", '"1.5"', "true", "18446744073709551616", '"v2"', '"-3"', "[1]", "1e3"):
        corpus.append((f"rating_version {version}", _with(BASE, "rating_version", version)))
    for token in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", '"\\ud800"', '"\\udc00x"'):
        for field in ("rating_value", "event_time", "comment", "sentiment"):
            corpus.append((f"{field} {token}", _with(BASE, field, token)))
    for time in ("1e308", "-1e308", "100000000000000000000000000000", '"99999999999999999999999999"',
                 '"2026-13-45T99:99:99"', '"0000-00-00"'):
        corpus.append((f"event_time {time}", _with(BASE, "event_time", time)))
    corpus += [
        ("event_id of 400 KB", json.dumps({**BASE, "event_id": "e" * 400_000}).encode()),
        ("team of 600 KB", json.dumps({**BASE, "team": "t" * 600_000}).encode()),
        ("a key of 100 KB", json.dumps({**BASE, "k" * 100_000: 1}).encode()),
        ("10,000 secondary ratings", json.dumps({**BASE, "secondary_ratings": [
            {"question_id": "q", "rating_value": 5, "rating_scale": "1-5"}] * 10_000}).encode()),
        ("200,000 array items", json.dumps({**BASE, "product": [0] * 200_000}).encode()),
        ("a message of ~1 MB of members", json.dumps({**BASE, **{f"f{i}": i for i in range(60_000)}}).encode()),
        ("empty", b""),
        ("not JSON", b"{oops"),
        ("invalid UTF-8", b'{"comment": "\xff\xfe"}'),
        ("binary", bytes(range(256)) * 8),
        ("a JSON array", b"[1, 2, 3]"),
        ("a JSON string", b'"feedback"'),
        ("null", b"null"),
        ("kind as an object", _with(BASE, "kind", '{"feedback": true}')),
        ("status as a list", _with(TICKET, "status", '["created"]')),
        ("channel as a boolean", _with(BASE, "channel", "true")),
        ("rating_scale as a number", _with(BASE, "rating_scale", "5")),
        ("secondary ratings not a list", _with(BASE, "secondary_ratings", '"5"')),
        ("secondary rating nested", _with(BASE, "secondary_ratings",
                                          '[{"question_id": "q", "rating_value": [[5]], "rating_scale": "1-5"}]')),
        ("duplicate keys", b'{"kind": "feedback", "kind": {"a": 1}}'),
    ]
    return corpus
