"""``satpulse report`` over whole periods and comparisons, on both engines (chDB and the Debian ClickHouse
server): cells written by the real WindowWorker and WindowStore (stored 1 h / 1 d roll-ups on) for two days one
week apart; ``--window all`` equals an independent computation (CSAT from the latest rating versions, exact mean
and nearest-rank resolution quantiles from the case lifecycles) and the offline batch cells, the total row is
the dimension ``all`` over the range, and ``--compare`` sets each row beside the right earlier period."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from domain.aggregates import WindowAgg
from domain.entities import batch_cells
from domain.windows import Windower
from satpulse import cli
from sinks.clickhouse import ClickHouse, connect
from sinks.migrations import migrate
from sinks.report import Report, build_report, figures, render
from sinks.window_store import WindowStore
from streams.window_worker import Item, WindowWorker
from tests.integration.offline import clickhouse_url
from tests.integration.test_clickhouse_store import BASE, DIMS, RULES, make_events

pytestmark = pytest.mark.integration

DAY, WEEK = 86400, 7 * 86400
B0 = BASE // 1000 + WEEK  # the second period's day; the first is BASE's day, a week earlier


@pytest.fixture(params=["chdb", "server"])
def store(request: pytest.FixtureRequest, services: Any, tmp_path: Path) -> Iterator[tuple[str, ClickHouse]]:
    """(URL, engine) of a fresh, migrated store on each engine."""
    url = clickhouse_url(request.param, tmp_path)
    engine = connect(url)
    migrate(engine)
    yield url, engine
    engine.close()


def shifted(events: list[dict[str, Any]], prefix: str, seconds: int) -> list[dict[str, Any]]:
    """``events`` moved ``seconds`` later, every id prefixed: other ratings and cases than the originals."""
    ids = ("event_id", "rating_id", "ticket_id")
    return [{**e, **{k: f"{prefix}{e[k]}" for k in ids if e.get(k) is not None},
             "event_time": e["event_time"] + seconds * 1000} for e in events]


def write_two_periods(ch: ClickHouse) -> tuple[tuple[list[dict[str, Any]], list[dict[str, Any]]], ...]:
    """Day 1 (BASE's day) and day 8 (a week later, other events) through the window stage; returns the events."""
    first = make_events(random.Random(21))
    feedback, tickets = make_events(random.Random(22))
    second = shifted(feedback, "w-", WEEK), shifted(tickets, "w-", WEEK)
    items = [Item("fb", 0, i, "feedback", r) for i, r in enumerate(first[0] + second[0])]
    items += [Item("tk", 0, i, "ticket", r) for i, r in enumerate(first[1] + second[1])]
    WindowWorker(Windower(60, 10, 5), WindowStore(ch, "fb", "tk", 60, (3600, DAY)), DIMS, RULES).process(items, 0.0)
    return first, second


def report(ch: ClickHouse, by: str, window: str, from_s: int, compare: str | None = None) -> Report:
    return build_report(ch, by, window, 60, from_s, from_s + DAY, (3600, DAY), compare)


def without_seeds(row: dict[str, Any]) -> dict[str, Any]:
    """A row's figures: the seed columns are float avg()s whose last digits vary between queries."""
    return {k: v for k, v in row.items() if not k.startswith("seed_")}


FIGURES = tuple(figures(WindowAgg()))


def figs(row: dict[str, Any]) -> dict[str, Any]:
    """The figures of a row or a comparison (no window start, value or seeds)."""
    return {k: row[k] for k in FIGURES}


def nearest_rank(values: list[float], q: float) -> float:
    return sorted(values)[max(1, math.ceil(round(q * len(values), 9))) - 1]


def test_whole_period_equals_an_independent_computation(store: tuple[str, ClickHouse]) -> None:
    _, ch = store
    _, (feedback, tickets) = write_two_periods(ch)
    latest: dict[str, dict[str, Any]] = {}
    for r in feedback:
        old = latest.get(r["rating_id"])
        if old is None or (r["rating_version"], r["event_id"]) > (old["rating_version"], old["event_id"]):
            latest[r["rating_id"]] = r
    rated = [r for r in latest.values() if r["satisfied"] is not None]
    cases: dict[str, dict[str, list[int]]] = {}
    for t in tickets:
        cases.setdefault(t["ticket_id"], {}).setdefault(t["status"], []).append(t["event_time"])
    durations = [(max(c["resolved"]) - min(c["created"])) / 1000 for c in cases.values()
                 if max(c["resolved"]) >= min(c["created"])]

    by_channel = report(ch, "channel", "all", B0)
    for row in by_channel.rows:
        mine = [r for r in rated if r["channel"] == row["value"]]
        assert row["window_start"] == datetime.fromtimestamp(B0, UTC).isoformat()
        assert (row["rated"], row["satisfied"]) == (len(mine), sum(r["satisfied"] for r in mine))
        assert row["csat_percent"] == pytest.approx(100 * sum(r["satisfied"] for r in mine) / len(mine))
    assert {r["value"] for r in by_channel.rows} == {"chat", "email"}
    total = by_channel.total
    assert (total["rated"], total["satisfied"]) == (len(rated), sum(r["satisfied"] for r in rated))
    assert total["resolved"] == len(durations)
    assert total["rt_mean_s"] == pytest.approx(sum(durations) / len(durations))
    for q, column in ((0.5, "rt_p50_s"), (0.9, "rt_p90_s")):  # the sketch's 1 % relative error
        assert total[column] == pytest.approx(nearest_rank(durations, q), rel=0.01)

    # every figure, the quantiles merged from the stored sketches included, equals the offline batch cells of the
    # day (all of the period's events fall in one UTC day), and the total is the dimension all
    expected = batch_cells(feedback, tickets, ("channel", "all"), DAY * 1000, RULES)
    assert [without_seeds(r) for r in by_channel.rows] == [
        {"window_start": row["window_start"], "value": k[1], **figures(v)}
        for (k, v), row in zip(sorted((k, v) for k, v in expected.items() if k[0] == "channel"), by_channel.rows,
                               strict=True)]
    assert without_seeds(total) == {"window_start": total["window_start"], "value": "all",
                                    **figures(expected[("all", "all", B0 * 1000)])}
    assert [without_seeds(r) for r in report(ch, "all", "all", B0).rows] == [without_seeds(total)]
    hourly = report(ch, "channel", "1h", B0)  # the total of hourly rows is the same whole-day aggregate
    assert without_seeds(hourly.total) == without_seeds(total)
    assert report(ch, "channel", "all", B0 + DAY).rows == []  # nothing that day: no rows, CSAT undefined
    assert report(ch, "channel", "all", B0 + DAY).total["csat_percent"] is None


def test_compare_with_the_previous_period_and_last_week(store: tuple[str, ClickHouse],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    url, ch = store
    write_two_periods(ch)

    def beside(now: Report, before: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Each row's comparison holds the figures of the row of ``before`` at its compared start (none there:
        nothing counted, CSAT undefined) and the CSAT delta."""
        assert now.rows
        for row in now.rows:
            compared = row["compare"]
            earlier = before.get((row["value"], compared["window_start"]), figures(WindowAgg()))
            assert figs(compared) == figs(earlier), row
            if earlier["csat_percent"] is None or row["csat_percent"] is None:
                assert compared["csat_delta_pp"] is None
            else:
                assert compared["csat_delta_pp"] == pytest.approx(row["csat_percent"] - earlier["csat_percent"])

    def keyed(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["value"], r["window_start"]): r for r in rows}

    week_before = report(ch, "channel", "all", B0 - WEEK).rows
    last_week = report(ch, "channel", "all", B0, "last-week")
    beside(last_week, keyed(week_before))
    assert {r["compare"]["window_start"] for r in last_week.rows} == {week_before[0]["window_start"]}
    assert all(r["compare"]["csat_delta_pp"] is not None for r in last_week.rows)
    assert figs(last_week.total["compare"]) == figs(report(ch, "all", "all", B0 - WEEK).total)

    previous = report(ch, "channel", "all", B0, "previous")  # the day before: nothing there
    beside(previous, {})
    assert previous.total["compare"]["window_start"] == datetime.fromtimestamp(B0 - DAY, UTC).isoformat()

    hourly = report(ch, "channel", "1h", B0, "previous")  # each hour beside the hour before, of the same report
    beside(hourly, keyed(hourly.rows))
    assert sum(r["compare"]["csat_delta_pp"] is not None for r in hourly.rows) >= 2
    beside(report(ch, "channel", "1h", B0, "last-week"), keyed(report(ch, "channel", "1h", B0 - WEEK).rows))

    # the command prints the same document (chDB: the engine is closed first, one session per directory)
    ch.close()
    span = ["--from", str(B0), "--to", str(B0 + DAY)]
    assert cli.main(["report", "--url", url, "--window", "all", "--format", "json", "--compare", "last-week",
                     *span]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["window"], doc["compare"], doc["from"]) == ("all", "last-week", "2026-01-08T00:00:00+00:00")
    assert [figs(r) | figs(r["compare"]) for r in doc["rows"]] == [
        figs(r) | figs(r["compare"]) for r in last_week.rows]
    assert cli.main(["report", "--url", url, "--window", "all", "--compare", "previous"]) == 2
    assert "give --from and --to" in capsys.readouterr().err
    engine = connect(url)
    try:
        assert render(report(engine, "all", "all", B0), "table").splitlines()[-1].split()[:2] == ["total", "all"]
    finally:
        engine.close()
