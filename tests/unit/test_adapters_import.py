"""Historical import with declarative mappings: both shipped data sets (expectations computed here, independently,
with the csv module) and the mapping features (day-first, time zones, conditions, checks, JSONL, errors)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.importer import ImportReport, run_import
from adapters.mapping import MappingError, load_mapping, parse_mapping
from domain.clean import clean
from satpulse import cli, codec

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
KAGGLE = DATA / "kaggle_support_tickets" / "customer_support_tickets.csv"
PWC = DATA / "pwc_call_centre" / "call_center_dataset.csv"
needs_data = pytest.mark.skipif(not KAGGLE.exists() or not PWC.exists(), reason="shared/data not present")
NOW_MS = 1_900_000_000_000
INGEST, DEAD = "t.ingest", "t.dead"


def do_import(path: Path, mapping: Path | dict[str, Any]) -> tuple[ImportReport, list[dict[str, Any]],
                                                                   list[dict[str, Any]]]:
    sent: list[tuple[str, bytes | None, bytes]] = []
    parsed = load_mapping(mapping) if isinstance(mapping, Path) else parse_mapping(mapping)
    report = run_import(path, parsed, lambda t, k, v: sent.append((t, k, v)), now_ms=NOW_MS, ingest_topic=INGEST,
                        dead_letter_topic=DEAD)
    published = [json.loads(v) for t, _, v in sent if t == INGEST]
    for (_topic, k, _), p in zip([s for s in sent if s[0] == INGEST], published, strict=True):
        # keyed like the clean event it becomes: a case by its ticket id, a rating by its rating id
        assert k == str(p["ticket_id"] if p.get("kind") == "ticket" else p.get("rating_id") or p["event_id"]).encode()
    dead = [codec.decode(v, codec.DEAD_LETTER)[1] for t, _, v in sent if t == DEAD]
    return report, published, dead


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@needs_data
def test_kaggle_import_matches_an_independent_count() -> None:
    rows = read_csv(KAGGLE)
    fmt = "%Y-%m-%d %H:%M:%S"
    first = [r for r in rows if r["First Response Time"]]
    closed = [r for r in rows if r["Time to Resolution"]]
    negative = [r for r in closed if r["First Response Time"] and datetime.strptime(r["Time to Resolution"], fmt)
                < datetime.strptime(r["First Response Time"], fmt)]
    rated = [r for r in rows if r["Customer Satisfaction Rating"]]
    empty = [r for r in rows if not (r["First Response Time"] or r["Time to Resolution"]
                                     or r["Customer Satisfaction Rating"])]
    assert len(rows) == 8469 and len(rated) == 2769 and len(empty) == 2819  # SOURCE.md

    report, published, dead = do_import(KAGGLE, ROOT / "mappings" / "kaggle_support_tickets.yaml")
    assert report.rows == len(rows)
    assert dict(report.events) == {"ticket:first_response": len(first),
                                   "ticket:resolved": len(closed) - len(negative),
                                   "feedback:rating": len(rated)}
    assert report.published == len(published) == len(first) + len(closed) - len(negative) + len(rated)
    assert dict(report.rejected_events) == dict(report.rejected_rows) == {"negative_duration": len(negative)}
    assert report.rows_without_events == len(empty) and report.rows_rejected == 0
    assert report.rows_partial == len(negative)
    # exactly the invalid rows are in the dead-letter stream, with their origin
    assert sorted(int(json.loads(d["payload"])["Ticket ID"]) for d in dead) == sorted(
        int(r["Ticket ID"]) for r in negative)
    assert {d["reason"] for d in dead} == {"negative_duration"}
    assert all(d["origin_ref"].startswith(f"{KAGGLE}:") for d in dead)
    # channel value map and ratings per channel, as counted in SOURCE.md's way
    expected_channels = Counter({"Chat": "chat", "Email": "email", "Phone": "phone", "Social media": "social"}[
        r["Ticket Channel"]] for r in rated)
    assert Counter(p["channel"] for p in published if p["kind"] == "feedback") == expected_channels
    assert Counter(p["rating_value"] for p in published if p["kind"] == "feedback") == Counter(
        r["Customer Satisfaction Rating"] for r in rated)
    for p in published:
        clean(p, NOW_MS, 300_000)  # the cleaner accepts every published submission


@needs_data
def test_pwc_import_matches_an_independent_count() -> None:
    rows = read_csv(PWC)
    answered = [r for r in rows if r["Answered (Y/N)"] == "Y"]
    resolved = [r for r in rows if r["Resolved"] == "Y"]
    rated = [r for r in rows if r["Satisfaction rating"]]
    assert len(rows) == 5000 and len(answered) == len(rated) == 4054 and len(resolved) == 3646  # SOURCE.md

    report, published, dead = do_import(PWC, ROOT / "mappings" / "pwc_call_centre.yaml")
    assert report.rows == 5000 and report.rows_published == 5000 and not dead
    assert dict(report.events) == {"ticket:created": 5000, "ticket:first_response": len(answered),
                                   "ticket:resolved": len(resolved), "ticket:closed": 5000 - len(answered),
                                   "feedback:rating": len(rated)}
    assert {p["channel"] for p in published} == {"phone"}
    by_id = {p["event_id"]: p for p in published}
    # ID0001: 2021-01-01 9:12:58 Zurich, answered after 109 s, talked 0:02:23, rated 3
    zurich = ZoneInfo("Europe/Zurich")
    start = datetime(2021, 1, 1, 9, 12, 58, tzinfo=zurich)
    assert by_id["pwc_call_centre:ID0001:created"]["event_time"] == start.isoformat()
    assert by_id["pwc_call_centre:ID0001:first_response"]["event_time"] == (start + timedelta(seconds=109)).isoformat()
    end = start + timedelta(seconds=109 + 143)
    assert by_id["pwc_call_centre:ID0001:resolved"]["event_time"] == end.isoformat()
    assert by_id["pwc_call_centre:ID0001:feedback"] | {"event_time": None} == {
        "kind": "feedback", "event_id": "pwc_call_centre:ID0001:feedback", "source": "pwc_call_centre",
        "event_time": None, "ticket_id": "ID0001", "channel": "phone", "agent": "Diane",
        "category": "Contract related", "rating_value": "3", "rating_scale": "1-5"}
    assert by_id["pwc_call_centre:ID0001:feedback"]["event_time"] == end.isoformat()
    for p in published:
        clean(p, NOW_MS, 300_000)


MAPPING: dict[str, Any] = {
    "name": "t", "source": "shop", "timezone": "Europe/Berlin", "row_id": "id",
    "fields": {"ticket_id": "id", "channel": {"column": "via", "map": {"Tel.": "phone", "Mail": "email"}},
               "comment": "text"},
    "times": {"opened": {"columns": ["day", "clock"], "formats": ["%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M"]},
              "closed": {"column": "closed", "format": "iso", "timezone": "America/New_York"},
              "rated": {"base": "closed", "plus": [{"column": "delay", "unit": "min"}]}},
    "events": [
        {"name": "created", "kind": "ticket", "status": "created", "time": "opened"},
        {"name": "resolved", "kind": "ticket", "status": "resolved", "time": "closed",
         "when": [{"column": "closed", "not_empty": True}], "checks": [{"not_before": "opened",
                                                                        "reason": "negative_duration"}]},
        {"name": "feedback", "kind": "feedback", "time": "rated", "when": [{"column": "score", "not_empty": True}],
         "rating": {"column": "score", "scale": "0-10"}},
    ],
}
CSV_TEXT = """id,day,clock,via,closed,delay,score,text
1,03/02/2024,09:30,Tel.,2024-02-03T10:00:00,5,9,great
2,3.2.2024,09:30,Mail,,,,
3,31/02/2024,09:30,Mail,,,,
4,03/02/2024,09:30,Mail,2024-02-03T01:00:00,,,
5,03/02/2024,09:30,Mail,2024-02-03T10:00:00,1,11,too high
6,03/02/2024,09:30,Mail
"""


def test_mapping_features(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(CSV_TEXT)
    report, published, dead = do_import(path, MAPPING)
    by_id = {p["event_id"]: p for p in published}
    # day-first with the mapping's zone (CET = +01:00), a per-time zone, and an offset in minutes
    assert by_id["shop:1:created"]["event_time"] == "2024-02-03T09:30:00+01:00"
    assert by_id["shop:1:resolved"]["event_time"] == "2024-02-03T10:00:00-05:00"
    assert by_id["shop:1:feedback"]["event_time"] == "2024-02-03T10:05:00-05:00"
    assert by_id["shop:1:feedback"]["rating_value"] == "9" and by_id["shop:1:feedback"]["comment"] == "great"
    assert by_id["shop:1:created"]["channel"] == "phone" and by_id["shop:2:created"]["channel"] == "email"
    assert "shop:2:resolved" not in by_id  # condition: closed empty
    assert {d["reason"] for d in dead} == {"bad_timestamp", "negative_duration", "invalid_rating",
                                           "unparseable_payload"}
    assert dict(report.rejected_events) == {"bad_timestamp": 1, "negative_duration": 1, "invalid_rating": 1,
                                            "unparseable_payload": 1}
    assert (report.rows, report.rows_published, report.rows_partial, report.rows_rejected) == (6, 2, 2, 2)


def test_jsonl_with_nested_fields(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"t": {"id": 7, "at": 1700000000}, "ch": "chat", "r": "good"}\n\n[1]\n')
    mapping = {"source": "j", "row_id": "t.id", "fields": {"ticket_id": "t.id", "channel": "ch"},
               "times": {"at": {"column": "t.at", "format": "epoch"}},
               "events": [{"name": "fb", "time": "at", "rating": {"column": "r", "scale": "good_bad"}}]}
    report, published, dead = do_import(path, mapping)
    assert published == [{"kind": "feedback", "event_id": "j:7:fb", "source": "j", "ticket_id": "7",
                          "channel": "chat", "event_time": "2023-11-14T22:13:20+00:00", "rating_value": "good",
                          "rating_scale": "good_bad"}]
    assert report.rows == 2 and [d["reason"] for d in dead] == ["unparseable_payload"]


@pytest.mark.parametrize(("change", "match"), [
    ({"fields": {"ticket_id": "id"}}, "channel is required"),
    ({"fields": {"channel": "via", "colour": "x"}}, "not a submission field"),
    ({"timezone": "Mars/Base"}, "unknown time zone"),
    ({"events": [{"kind": "ticket", "time": "opened"}]}, "needs a status"),
    ({"events": [{"kind": "feedback", "time": "nope"}]}, "must name one of times"),
    ({"extra": 1}, "unknown keys"),
])
def test_mapping_errors(change: dict[str, Any], match: str) -> None:
    with pytest.raises(MappingError, match=match):
        parse_mapping({**MAPPING, **change})


def test_missing_column_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id,day\n1,03/02/2024\n")
    sent: list[object] = []
    with pytest.raises(MappingError, match="not in the header"):
        run_import(path, parse_mapping(MAPPING), lambda *a: sent.append(a))
    assert sent == []


@needs_data
def test_cli_dry_run_prints_submissions(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["import", str(PWC), "--mapping", str(ROOT / "mappings" / "pwc_call_centre.yaml"),
                     "--dry-run", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 17700 and "events published 17700" in err and "rows read 5000" in err
    assert cli.main(["import", str(PWC), "--mapping", str(ROOT / "mappings" / "kaggle_support_tickets.yaml"),
                     "--dry-run", "--no-progress"]) == 2
    assert "not in the header" in capsys.readouterr().err
