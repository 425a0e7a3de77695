"""``satpulse report`` formatting over hand-built window cells (the queries replaced by an in-memory version of
their contract): one JSON document, JSON lines, the total row (a merged aggregate, not an average of
percentages), whole-range rows, the compare columns and undefined CSAT kept undefined."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from domain.aggregates import WindowAgg, duration_agg, rating_agg
from sinks import report as report_module
from sinks.queries import SeedRow, WindowRow, merge_seeds
from sinks.report import COLUMNS, build_report, render

HOUR, DAY = 3600, 86400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def ratings(satisfied: int, unsatisfied: int) -> WindowAgg:
    agg = WindowAgg()
    for _ in range(satisfied):
        agg.merge(rating_agg(True, 5.0))
    for _ in range(unsatisfied):
        agg.merge(rating_agg(False, 1.0))
    return agg


# (dimension, value, minute cell start) -> aggregate; "all" holds the merge of the channels of each cell
CELLS: dict[tuple[str, str, int], WindowAgg] = {
    ("channel", "chat", T0 + 60): ratings(1, 0),  # 100 % of 1
    ("channel", "email", T0 + 120): ratings(1, 3),  # 25 % of 4
    ("channel", "phone", T0 + 180): duration_agg("resolution", 90_000, False),  # nothing rated
    ("channel", "chat", T0 - HOUR + 60): ratings(1, 1),  # the hour before: 50 %
    ("channel", "chat", T0 - 7 * DAY + 60): ratings(0, 2),  # a week before: 0 %
}
for (_, _, start), agg in list(CELLS.items()):
    CELLS.setdefault(("all", "all", start), WindowAgg()).merge(agg)


def fake_windows_of(ch: object, dimension: str, size: int, cell_seconds: int, stored: object, from_s: int,
                    to_s: int) -> list[WindowRow]:
    out: dict[tuple[str, int], WindowAgg] = {}
    for (dim, value, start), agg in CELLS.items():
        if dim == dimension and from_s <= start < to_s:
            out.setdefault((value, start // size * size), WindowAgg()).merge(agg)
    return [WindowRow(value, start, agg) for (value, start), agg in sorted(out.items())]


def fake_totals(ch: object, dimension: str, cell_seconds: int, from_s: int, to_s: int) -> list[WindowRow]:
    rows = fake_windows_of(ch, dimension, 2**32, cell_seconds, (), from_s, to_s)
    return [WindowRow(r.dimension_value, 0, r.agg) for r in rows]


@pytest.fixture(autouse=True)
def fake_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "windows_of", fake_windows_of)
    monkeypatch.setattr(report_module, "totals", fake_totals)
    monkeypatch.setattr(report_module, "seed_metrics", lambda *args: [])
    monkeypatch.setattr(report_module, "seed_totals", lambda *args: [])


def hour_report(compare: str | None = None) -> report_module.Report:
    return build_report(None, "channel", "1h", 60, T0, T0 + HOUR, (), compare)  # type: ignore[arg-type]


def test_json_is_one_document_with_parameters_rows_and_total() -> None:
    doc = json.loads(render(hour_report(), "json"))
    assert doc["by"] == "channel" and doc["window"] == "1h" and doc["compare"] is None
    assert (doc["from"], doc["to"]) == ("2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00")
    assert [(r["value"], r["rated"], r["csat_percent"]) for r in doc["rows"]] == [
        ("chat", 1, 100.0), ("email", 4, 25.0), ("phone", 0, None)]  # nothing rated: null, never 0
    assert set(doc["rows"][0]) == set(COLUMNS)
    total = doc["total"]
    assert (total["value"], total["rated"], total["satisfied"], total["resolved"]) == ("all", 5, 2, 1)
    assert total["csat_percent"] == 40.0  # 2 of 5 rated, not the mean of 100 % and 25 %
    assert total["rt_p50_s"] == pytest.approx(90, rel=0.01)


def test_jsonl_is_one_row_per_line_without_total() -> None:
    report = hour_report()
    lines = render(report, "jsonl").splitlines()
    assert [json.loads(line) for line in lines] == report.rows


def test_table_has_a_total_row_and_dashes_for_undefined_values() -> None:
    lines = render(hour_report(), "table").splitlines()
    assert lines[0].split()[:5] == ["window_start", "value", "rated", "satisfied", "csat_percent"]
    phone = lines[3].split()
    assert phone[1:5] == ["phone", "0", "0", "-"]
    total = lines[4].split()
    assert total[:5] == ["total", "all", "5", "2", "40.00"]
    assert len(lines) == 5


def test_whole_range_rows_merge_every_window() -> None:
    report = build_report(None, "channel", "all", 60, T0 - DAY, T0 + DAY)  # type: ignore[arg-type]
    assert [(r["window_start"], r["value"], r["rated"], r["satisfied"]) for r in report.rows] == [
        ("2025-12-31T00:00:00+00:00", "chat", 3, 2), ("2025-12-31T00:00:00+00:00", "email", 4, 1),
        ("2025-12-31T00:00:00+00:00", "phone", 0, 0)]
    assert (report.total["rated"], report.total["satisfied"]) == (7, 3)
    by_all = build_report(None, "all", "all", 60, T0 - DAY, T0 + DAY)  # type: ignore[arg-type]
    assert [{k: v for k, v in r.items() if k != "value"} for r in by_all.rows] == [
        {k: v for k, v in report.total.items() if k != "value"}]  # the total is dimension all


def test_compare_previous_window_shows_the_compared_csat_and_delta() -> None:
    report = hour_report("previous")
    compared = {r["value"]: r["compare"] for r in report.rows}
    assert compared["chat"]["window_start"] == "2025-12-31T23:00:00+00:00"
    assert (compared["chat"]["rated"], compared["chat"]["csat_percent"]) == (2, 50.0)
    assert compared["chat"]["csat_delta_pp"] == pytest.approx(50.0)
    assert compared["email"]["rated"] == 0
    assert compared["email"]["csat_percent"] is None and compared["email"]["csat_delta_pp"] is None
    assert compared["phone"]["csat_delta_pp"] is None  # nothing rated now
    assert report.total["compare"]["csat_percent"] == 50.0
    assert report.total["compare"]["csat_delta_pp"] == pytest.approx(-10.0)

    lines = render(report, "table").splitlines()
    assert lines[0].split()[-2:] == ["compared_csat_percent", "csat_delta_pp"]
    assert lines[1].split()[-2:] == ["50.00", "50.00"] and lines[2].split()[-2:] == ["-", "-"]
    assert lines[-1].split()[-2:] == ["50.00", "-10.00"]
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [(r["value"], r["compared_csat_percent"], r["csat_delta_pp"]) for r in rows] == [
        ("chat", "50.0", "50.0"), ("email", "", ""), ("phone", "", "")]
    doc = json.loads(render(report, "json"))
    assert doc["compare"] == "previous" and doc["rows"][0]["compare"] == compared["chat"]


def test_compare_last_week_of_a_whole_range() -> None:
    report = build_report(None, "channel", "all", 60, T0, T0 + DAY, (), "last-week")  # type: ignore[arg-type]
    chat = report.rows[0]
    assert chat["compare"]["window_start"] == "2025-12-25T00:00:00+00:00"
    assert (chat["compare"]["rated"], chat["compare"]["csat_percent"], chat["compare"]["csat_delta_pp"]) == (
        2, 0.0, 100.0)  # 0 % rated is a CSAT of 0, unlike nothing rated


def test_compare_previous_whole_range_needs_a_bounded_period() -> None:
    with pytest.raises(ValueError, match="before 1970: give --from and --to"):
        build_report(None, "channel", "all", 60, 0, 2**32 - 1, (), "previous")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown comparison"):
        hour_report("yesterday")


def test_seeds_of_the_total_are_weighted_by_their_terms() -> None:
    rows = [SeedRow("a", 0, 2.0, 1, None, 0), SeedRow("b", 0, 5.0, 3, 1.5, 2)]
    assert merge_seeds("all", rows) == SeedRow("all", 0, 4.25, 4, 1.5, 2)
    assert merge_seeds("all", []) == SeedRow("all", 0, None, 0, None, 0)


def test_report_total_carries_merged_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = [SeedRow("chat", T0, 4.0, 1, None, 0), SeedRow("email", T0, 1.0, 3, 1.1, 1)]

    def seed_metrics(*args: Any) -> list[SeedRow]:
        return seeds

    monkeypatch.setattr(report_module, "seed_metrics", seed_metrics)
    report = hour_report()
    assert [r["seed_csat"] for r in report.rows] == [4.0, 1.0, None]
    assert report.total["seed_csat"] == pytest.approx(1.75) and report.total["seed_rtt"] == pytest.approx(1.1)
