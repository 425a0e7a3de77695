"""The dashboard's JSON as a pure function of query results (dashboard/model.py), and its HTTP handlers
(dashboard/web.py) over a stub reader and a stub Alertmanager."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dashboard.model import WEEK_SECONDS, Alerts, Snapshot, alerts_view, build, parse_request
from dashboard.web import Dashboard, fetch_alerts
from domain.aggregates import WindowAgg
from satpulse.settings import Settings
from sinks.clickhouse import ClickHouse, ClickHouseError, StoreNotReady
from sinks.queries import WindowRow

NOW = 1_750_000_000 // 60 * 60 + 30  # mid-minute
CELL = 60
DIMENSIONS = ["channel", "team"]


def row(start: int, rated: int = 0, satisfied: int = 0, value: str = "all", created: int = 0) -> WindowRow:
    return WindowRow(value, start, WindowAgg(rated=rated, satisfied=satisfied, created=created))


def cell(seconds_ago: int, rated: int, satisfied: int, week_ago: bool = False) -> WindowRow:
    """An 'all' cell whose start is ``seconds_ago`` before NOW (a week earlier still with ``week_ago``)."""
    start = (NOW - seconds_ago) // CELL * CELL - (WEEK_SECONDS if week_ago else 0)
    return row(start, rated, satisfied)


def snapshot(**fields: Any) -> Snapshot:
    empty: dict[str, Any] = {"all_cells": [], "all_cells_last_week": [], "by_value": [], "by_value_last_week": [],
                             "dead_letters": []}
    return Snapshot(**(empty | fields))


def answer(snap: Snapshot, period: str = "1h") -> dict[str, Any]:
    out = build(snap, Alerts(configured=False), "channel", period, NOW, CELL, DIMENSIONS)
    json.dumps(out, allow_nan=False)  # plain JSON: no NaN, no objects
    return out


def tiles(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["period"]: t for t in out["headline"]}


# ------------------------------------------------------------------------------------------------ model


def test_parse_request_defaults_and_refusals() -> None:
    assert parse_request({}, DIMENSIONS) == ("channel", "1h")
    assert parse_request({"dimension": "team", "period": "24h"}, DIMENSIONS) == ("team", "24h")
    for bad in ({"dimension": "all"}, {"dimension": "x'); DROP"}, {"period": "2h"}):
        with pytest.raises(ValueError):
            parse_request(bad, DIMENSIONS)


def test_periods_hold_the_cells_that_start_within_them() -> None:
    cells = [cell(100, 4, 3), cell(1_000, 10, 5), cell(10_000, 6, 6), cell(90_000, 50, 0)]  # the last: > 24 h
    t = tiles(answer(snapshot(all_cells=cells)))
    assert [(t[p]["rated"], t[p]["satisfied"]) for p in ("15m", "1h", "24h")] == [(4, 3), (14, 8), (20, 14)]
    assert t["24h"]["csat_percent"] == pytest.approx(70.0)
    assert (t["now"]["from"], t["now"]["to"], t["now"]["rated"]) == ((NOW - 100) // CELL * CELL,
                                                                      (NOW - 100) // CELL * CELL + CELL, 4)


def test_nothing_rated_is_none_never_zero() -> None:
    out = answer(snapshot(all_cells=[cell(20_000, 0, 0)], by_value=[row(0, created=3, value="email")]))
    t = tiles(out)
    assert t["now"]["rated"] == 0 and t["now"]["csat_percent"] is None and t["now"]["from"] == t["now"]["to"]
    assert t["1h"]["csat_percent"] is None and t["1h"]["trend_pp"] is None
    email = out["by_value"][0]
    assert (email["value"], email["rated"], email["csat_percent"], email["created"]) == ("email", 0, None, 3)
    assert set(out["series"]["csat"]) == {None}


def test_now_is_the_latest_rated_cell_of_the_last_15_minutes() -> None:
    t = tiles(answer(snapshot(all_cells=[cell(700, 5, 5), cell(200, 2, 1), cell(30, 0, 0)])))
    assert (t["now"]["rated"], t["now"]["csat_percent"]) == (2, 50.0)
    t = tiles(answer(snapshot(all_cells=[cell(1_000, 5, 5)])))  # older than 15 min: no "now"
    assert t["now"]["rated"] == 0


def test_trend_against_the_same_period_last_week() -> None:
    this = [cell(100, 10, 8), cell(2_000, 10, 6)]
    last = [cell(100, 4, 2, week_ago=True), cell(5_000, 10, 10, week_ago=True)]  # 5000 s: outside last week's 1 h
    t = tiles(answer(snapshot(all_cells=this, all_cells_last_week=last)))
    assert t["1h"]["csat_percent"] == pytest.approx(70.0)
    assert (t["1h"]["last_week_rated"], t["1h"]["last_week_csat_percent"]) == (4, 50.0)
    assert t["1h"]["trend_pp"] == pytest.approx(20.0)
    assert t["24h"]["trend_pp"] == pytest.approx(70.0 - 100 * 12 / 14)
    assert t["15m"]["trend_pp"] == pytest.approx(30.0)


def test_series_buckets_and_last_week_on_the_same_axis() -> None:
    this = [cell(100, 2, 2), cell(170, 2, 0)]
    last = [cell(100, 4, 1, week_ago=True)]
    s = answer(snapshot(all_cells=this, all_cells_last_week=last), "1h")["series"]
    assert s["bucket_seconds"] == 60 and len(s["t"]) == 61  # the first bucket is partial
    assert s["t"][0] <= NOW - 3600 < s["t"][1] and s["t"][-1] <= NOW < s["t"][-1] + 60
    at = s["t"].index((NOW - 100) // 60 * 60)
    assert (s["csat"][at], s["rated"][at], s["last_week_csat"][at]) == (100.0, 2, 25.0)
    assert s["csat"][at - 1] == 0.0 and s["last_week_csat"][at - 1] is None
    day = answer(snapshot(all_cells=this), "24h")["series"]
    assert day["bucket_seconds"] == 900 and day["rated"][-1] == 4 and len(day["t"]) == 97


def test_series_bucket_is_a_whole_number_of_cells() -> None:
    out = build(snapshot(), Alerts(configured=False), "channel", "15m", NOW, 300, DIMENSIONS)
    assert out["series"]["bucket_seconds"] == 300


def test_by_value_most_rated_first_with_last_week() -> None:
    out = answer(snapshot(by_value=[row(0, 3, 3, "chat"), row(0, 9, 3, "email"), row(0, 3, 0, "phone")],
                          by_value_last_week=[row(0, 2, 1, "chat"), row(0, 5, 5, "web")]))
    rows = {r["value"]: r for r in out["by_value"]}
    assert [r["value"] for r in out["by_value"]] == ["email", "chat", "phone"]  # web: only last week
    assert rows["chat"]["trend_pp"] == pytest.approx(50.0)
    assert rows["email"]["last_week_rated"] == 0 and rows["email"]["trend_pp"] is None


def test_dead_letters_most_frequent_first() -> None:
    out = answer(snapshot(dead_letters=[("invalid_rating", "cleaner", 2, NOW - 5),
                                        ("unparseable_payload", "jsonl", 7, NOW - 50),
                                        ("future_timestamp", "cleaner", 2, NOW - 9)]))
    assert out["dead_letters"]["total"] == 11
    assert [(d["reason"], d["count"]) for d in out["dead_letters"]["by_reason"]] == [
        ("unparseable_payload", 7), ("future_timestamp", 2), ("invalid_rating", 2)]


def test_alerts_view_lists_active_alerts_most_severe_first() -> None:
    raw = [
        {"labels": {"alertname": "SatpulseDeadLetters", "severity": "warning", "stage": "cleaner"},
         "annotations": {"summary": "dead letters"}, "startsAt": "2025-06-15T10:00:00Z", "status": {"state": "active"}},
        {"labels": {"alertname": "SatpulseCsatLow", "severity": "critical", "channel": "chat", "dimension": "channel"},
         "annotations": {"description": "CSAT below 60 %"}, "startsAt": "2025-06-15T11:00:00Z",
         "status": {"state": "active"}},
        {"labels": {"alertname": "Silenced", "severity": "critical"}, "status": {"state": "suppressed"}},
    ]
    view = alerts_view(Alerts(configured=True, alerts=raw))
    assert [(a["name"], a["severity"], a["summary"], a["where"]) for a in view["firing"]] == [
        ("SatpulseCsatLow", "critical", "CSAT below 60 %", "channel=chat, dimension=channel"),
        ("SatpulseDeadLetters", "warning", "dead letters", "stage=cleaner")]
    assert alerts_view(Alerts(configured=False)) == {"configured": False, "error": None, "firing": []}


# ------------------------------------------------------------------------------------------------ web


def run(scenario: Callable[[TestClient[web.Request, web.Application]], Awaitable[None]], app: web.Application) -> None:
    async def main() -> None:
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())


def dashboard_app(read: Callable[[Callable[[ClickHouse], Snapshot]], Awaitable[Snapshot]],
                  **settings: Any) -> web.Application:
    app = web.Application()
    for path, handler in Dashboard(read, Settings(**settings)).routes():
        app.router.add_get(path, handler)
    return app


async def read_empty(fn: Callable[[ClickHouse], Snapshot]) -> Snapshot:
    return snapshot(by_value=[row(0, 2, 1, "chat")])


def test_data_endpoint_answers_json() -> None:
    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        response = await client.get("/dashboard/data", params={"dimension": "team", "period": "15m"})
        assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
        body = await response.json()
        assert (body["dimension"], body["period"]) == ("team", "15m")
        assert body["dimensions"] == ["channel", "team", "agent", "category", "product", "source"]
        assert body["by_value"][0]["csat_percent"] == 50.0 and body["alerts"]["configured"] is False
        response = await client.get("/dashboard/data", params={"period": "7d"})
        assert response.status == 400 and "unknown period" in (await response.json())["error"]

    run(scenario, dashboard_app(read_empty))


@pytest.mark.parametrize(("error", "said"), [
    (StoreNotReady("not connected"), "not connected"),
    (ClickHouseError("Code: 60.\nDB::Exception: Table t.window_cells doesn't exist.. Stack trace:\n\n0. /lib/x.so"),
     "Code: 60. DB::Exception: Table t.window_cells doesn't exist.."),
])
def test_data_endpoint_503_while_the_store_cannot_be_read(error: Exception, said: str) -> None:
    async def failing(fn: Callable[[ClickHouse], Snapshot]) -> Snapshot:
        raise error

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        response = await client.get("/dashboard/data")
        assert response.status == 503
        assert (await response.json())["error"] == f"ClickHouse cannot be read yet: {said}"

    run(scenario, dashboard_app(failing))


def test_page_and_assets() -> None:
    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        page = await client.get("/dashboard")
        assert page.status == 200 and "/dashboard/static/dashboard.js" in await page.text()
        script = await client.get("/dashboard/static/dashboard.js")
        assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
        for name in ("nope.js", "..%2Fweb.py", "index.html"):
            assert (await client.get(f"/dashboard/static/{name}")).status == 404

    run(scenario, dashboard_app(read_empty))


def test_alerts_from_alertmanager() -> None:
    alerts = [{"labels": {"alertname": "SatpulseWorkerDown", "severity": "critical"}, "annotations": {},
               "startsAt": "2025-06-15T10:00:00Z", "status": {"state": "active"}}]
    seen: list[dict[str, str]] = []

    async def api(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        return web.json_response(alerts)

    stub = web.Application()
    stub.router.add_get("/api/v2/alerts", api)

    async def scenario(client: TestClient[web.Request, web.Application]) -> None:
        url = str(client.make_url(""))
        got = await fetch_alerts(url)
        assert got == Alerts(configured=True, alerts=alerts)
        assert seen == [{"active": "true", "silenced": "false", "inhibited": "false"}]
        missing = await fetch_alerts(url + "/nothing-here")
        assert missing.configured and missing.error and "cannot be read" in missing.error

    run(scenario, stub)
    assert asyncio.run(fetch_alerts(None)) == Alerts(configured=False)
