"""The Grafana dashboards in config/grafana/dashboards/: they have panels for every figure of satpulse's own page
(dashboard/), every PromQL expression runs on the real Prometheus, every ClickHouse panel query (Grafana macros
replaced by literals) runs on chDB and on the ClickHouse server over known window cells and dead letters and
gives the numbers an independent computation expects.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from satpulse import metrics
from satpulse.settings import get_settings
from sinks.clickhouse import ClickHouse, connect
from sinks.migrations import migrate
from tests.integration.offline import clickhouse_url

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO_ROOT / "config" / "grafana" / "dashboards").glob("*.json"))
RULES = sorted((REPO_ROOT / "config" / "prometheus" / "rules").glob("*.yml"))
DATASOURCES = {"prometheus": "prometheus", "clickhouse": "grafana-clickhouse-datasource"}

HOUR = 3600
WEEK = 7 * 24 * HOUR


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def _targets(uid: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(dashboard file, panel title, target) of every query target of that data source uid."""
    for path in DASHBOARDS:
        for panel in _panels(json.loads(path.read_text())["panels"]):
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if ds.get("uid") == uid:
                    yield path.name, panel["title"], target


PROMQL = [(f"{d}: {t} [{q['refId']}]", q["expr"]) for d, t, q in _targets("prometheus")]
SQL = [(f"{d}: {t}", t, q["rawSql"]) for d, t, q in _targets("clickhouse")]


# ------------------------------------------------------------------------------------------------ static


def test_dashboards_are_well_formed() -> None:
    assert DASHBOARDS, "no dashboards in config/grafana/dashboards"
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)), uids
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["title"] and dash["panels"], path.name
        ids = [p["id"] for p in _panels(dash["panels"])]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in _panels(dash["panels"]):
            if panel["type"] == "row":
                continue
            assert panel.get("targets"), f"{path.name}: {panel['title']} has no query"
            for target in panel["targets"]:
                ds = target.get("datasource") or panel.get("datasource")
                assert ds and DATASOURCES.get(ds["uid"]) == ds["type"], f"{path.name}: {panel['title']}: {ds}"
                assert target.get("expr") or target.get("rawSql"), f"{path.name}: {panel['title']}"
    assert len(PROMQL) >= 10 and len(SQL) >= 5


def test_clickhouse_panels_merge_partitions_with_final() -> None:
    for name, _, sql in SQL:
        for table in re.findall(r"FROM satpulse\.(\w+)(?! FINAL)\b", sql):
            pytest.fail(f"{name}: reads satpulse.{table} without FINAL")


def _known_series() -> set[str]:
    names = {"up", "ALERTS", "ALERTS_FOR_STATE"}
    for family in metrics.REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def test_promql_names_only_known_series() -> None:
    """A typo in a metric name still returns `success` (with no data): check names against metrics.py and the
    recording rules."""
    known = _known_series()
    exprs = [e for _, e in PROMQL]
    for path in DASHBOARDS:
        for var in json.loads(path.read_text()).get("templating", {}).get("list", []):
            query = var.get("query")
            if var.get("datasource", {}).get("uid") == "prometheus":
                exprs.append(query["query"] if isinstance(query, dict) else query)
    for expr in exprs:
        names = re.findall(r"(?<![\w:])satpulse_[a-z_]+|\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b|\bALERTS\b", expr)
        assert names or expr.startswith("up{"), f"{expr!r} names no series"
        for name in names:
            assert name in known, f"{expr!r}: unknown series {name}"


def _quantile(expr: str, quantile: str, histogram: str) -> bool:
    return re.search(rf"histogram_quantile\({re.escape(quantile)},.*\b{histogram}_bucket\b", expr) is not None


# every figure of satpulse's own page (dashboard/) -> what a panel query showing it contains
PAGE_FIGURES: dict[str, Callable[[str], bool]] = {
    "CSAT now and over 15 min / 1 h / 24 h": lambda q: "satpulse_rolling_csat_percent" in q,
    "CSAT against the same time last week": lambda q: "offset 1w" in q or "- 604800" in q,
    "CSAT by the chosen dimension": lambda q: "dimension = '$dimension'" in q and "sum(satisfied)" in q,
    "first response p50": lambda q: _quantile(q, "0.5", "satpulse_first_response_seconds"),
    "first response p90": lambda q: _quantile(q, "0.9", "satpulse_first_response_seconds"),
    "resolution p50": lambda q: _quantile(q, "0.5", "satpulse_resolution_seconds"),
    "resolution p90": lambda q: _quantile(q, "0.9", "satpulse_resolution_seconds"),
    "SLA breaches": lambda q: "sum(first_response_breaches)" in q and "sum(resolution_breaches)" in q,
    "ratings, tickets created and resolved": lambda q: all(f"sum({c})" in q for c in ("rated", "created", "resolved")),
    "dead letters by reason": lambda q: "satpulse.dead_letters FINAL" in q and "GROUP BY reason" in q,
    "alerts firing": lambda q: 'alertstate="firing"' in q,
}


def test_dashboards_show_every_figure_of_the_builtin_page() -> None:
    queries = [e for _, e in PROMQL] + [sql for _, _, sql in SQL]
    assert [f for f, shows in PAGE_FIGURES.items() if not any(shows(q) for q in queries)] == []
    # the page's dimension control offers the dimensions the workers keep; so does the $dimension variable
    variables = [v for p in DASHBOARDS for v in json.loads(p.read_text())["templating"]["list"]]
    assert [[o["value"] for o in v["options"]] for v in variables if v["name"] == "dimension"] == [
        [d for d in get_settings().dimensions if d != "all"]]


# ------------------------------------------------------------------------------------------------ Prometheus


def _promql(expr: str) -> str:
    for macro, value in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h"),
                         ("${channel:regex}", ".*"), ("$channel", ".*")):
        expr = expr.replace(macro, value)
    assert "$" not in expr.replace("$1", ""), f"unsubstituted Grafana variable in {expr!r}"
    return expr


@pytest.mark.parametrize(("name", "expr"), PROMQL, ids=[n for n, _ in PROMQL])
def test_promql_runs_on_prometheus(monitoring: object, name: str, expr: str) -> None:
    port = get_settings().prometheus_port
    for path in ("query", "query_range"):
        params = {"query": _promql(expr)}
        if path == "query_range":
            now = time.time()
            params |= {"start": str(now - HOUR), "end": str(now), "step": "15"}
        url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", (name, body)


# ------------------------------------------------------------------------------------------------ ClickHouse

FROM_S = (1_750_000_000 // HOUR) * HOUR  # a fixed hour; the data below sits inside [FROM_S, FROM_S + 1 h]
TO_S = FROM_S + HOUR
CELL = 60
CELL_COLUMNS = ("dimension", "dimension_value", "window_seconds", "window_start", "source_topic", "source_partition",
                "rated", "satisfied", "resolved", "resolution_ms", "resolution_breaches", "version", "written_at")
CASE_COLUMNS = ("dimension", "dimension_value", "window_seconds", "window_start", "source_topic", "source_partition",
                "created", "first_response_breaches", "version", "written_at")
DEAD_LETTER_COLUMNS = ("origin_topic", "origin_partition", "origin_offset", "origin_ref", "stage", "reason", "detail",
                       "payload", "failed_at", "failed_at_ms", "dead_letter_partition", "dead_letter_offset",
                       "received_at")
EVENT_COLUMNS = ("rating_id", "rating_version", "event_id", "source", "channel", "event_time", "event_time_ms",
                 "ingest_time_ms", "score", "satisfied", "comment", "source_partition", "source_offset")


def _sql(sql: str, database: str) -> str:
    """Grafana's ClickHouse macros and this dashboard's variables, replaced by literals."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({FROM_S}) AND \1 <= toDateTime({TO_S})", sql)
    for macro, value in (("$__fromTime", f"toDateTime({FROM_S})"), ("$__toTime", f"toDateTime({TO_S})"),
                         ("$__interval_s", str(CELL)), ("$window_seconds", str(CELL)), ("${channel:regex}", ".*"),
                         ("$dimension", "channel")):
        sql = sql.replace(macro, value)
    assert not re.search(r"\$(\w|\{)", sql), f"unsubstituted Grafana macro in {sql!r}"
    return re.sub(r"\bsatpulse\.(\w+)", rf"{database}.\1", sql)


def _load_cells(ch: ClickHouse) -> None:
    """Window cells as the worker writes them, one insert per version, and dead letters. Expected (independent
    of the SQL): chat in the first minute: partition 0's latest version (20 rated, 10 satisfied) + partition 1
    (10, 10) = 30 rated, 20 satisfied, 66.67 %; partition 0's older version (10, 2) must not count. The next
    minute ('all' only) holds 6 cases created, 2 first responses late. Dead letters: one origin stored twice
    (once under FINAL), one failed before the range."""
    t, w = FROM_S + 60, FROM_S + 600
    topic = "satpulse.feedback.v1"
    batches = [
        [("channel", "chat", CELL, t, topic, 0, 10, 2, 0, 0, 0, 1, w)],
        [("channel", "chat", CELL, t, topic, 0, 20, 10, 4, 4 * HOUR * 1000, 1, 5, w),
         ("channel", "chat", CELL, t, topic, 1, 10, 10, 0, 0, 0, 3, w),
         ("channel", "email", CELL, t, topic, 2, 8, 8, 0, 0, 0, 2, w),
         ("channel", "web", CELL, t, topic, 3, 0, 0, 0, 0, 0, 2, w),  # no ratings: CSAT undefined, left out
         ("all", "all", CELL, t, topic, 0, 30, 20, 4, 4 * HOUR * 1000, 1, 5, w),
         ("all", "all", CELL, t, topic, 1, 18, 18, 0, 0, 0, 3, w),
         ("all", "all", CELL, t - WEEK, topic, 0, 10, 9, 0, 0, 0, 1, w - WEEK)],
    ]
    for rows in batches:
        ch.insert(f"{ch.database}.window_cells", CELL_COLUMNS, rows)
    events = [("r1", 1, "e1", "zendesk", "chat", t, t * 1000, t * 1000, 5.0, 1, "ok", 0, 1),
              ("r1", 2, "e2", "zendesk", "chat", t + 5, (t + 5) * 1000, (t + 5) * 1000, 1.0, 0, "too slow", 0, 2),
              ("r2", 1, "e3", "ivr", "phone", t, t * 1000, t * 1000, 5.0, 1, None, 1, 1)]
    ch.insert(f"{ch.database}.feedback_events", EVENT_COLUMNS, events)
    ch.insert(f"{ch.database}.window_cells", CASE_COLUMNS, [("all", "all", CELL, t + 60, topic, 0, 6, 2, 1, w)])
    ingest = "satpulse.ingest.v1"
    letters = [(ingest, 0, 5, "", "cleaner", "invalid_rating", "7 on 1-5", "{}", t, t * 1000, 0, 1, t),
               (ingest, 0, 5, "", "cleaner", "invalid_rating", "7 on 1-5", "{}", t, t * 1000, 0, 9, t + 1),
               (ingest, 1, 8, "", "cleaner", "invalid_rating", "0 on 1-5", "{}", t + 9, t * 1000 + 9000, 1, 2, t),
               ("", -1, -1, "in.jsonl:3", "jsonl", "unparseable_payload", "not JSON", "x", t, t * 1000, 2, 3, t),
               ("", -1, -1, "in.jsonl:1", "jsonl", "unparseable_payload", "not JSON", "x", FROM_S - HOUR,
                (FROM_S - HOUR) * 1000, 2, 1, FROM_S - HOUR)]
    for row in letters:  # one insert each: the repeated origin is a second part, merged by FINAL
        ch.insert(f"{ch.database}.dead_letters", DEAD_LETTER_COLUMNS, [row])


def _col(rows: list[tuple[Any, ...]], key: int, value: int, *match: Any) -> list[Any]:
    return [r[value] for r in rows if r[key] in match]


def _check(title: str, rows: list[tuple[Any, ...]]) -> bool:
    """Compare a panel's rows with the expectation of _load_cells; False if the panel has no specific check."""
    if title == "CSAT per window by channel":
        assert _col(rows, 1, 2, "chat") == pytest.approx([200 / 3]), rows
        assert _col(rows, 1, 2, "email") == pytest.approx([100]), rows
        assert not _col(rows, 1, 2, "web"), rows  # nothing rated: undefined, not 0
    elif title == "Rated feedback per window by channel":
        assert [int(x) for x in _col(rows, 1, 2, "chat")] == [30], rows
    elif title == "CSAT vs same time last week (all channels)":
        assert _col(rows, 1, 2, "this week") == pytest.approx([100 * 38 / 48]), rows
        assert _col(rows, 1, 2, "last week") == pytest.approx([90]), rows
    elif title == "Resolution time by channel (mean) and SLA breaches":
        assert _col(rows, 1, 2, "chat") == pytest.approx([HOUR]), rows
        assert [int(x) for x in _col(rows, 1, 3, "chat")] == [1], rows
    elif title == "CSAT by channel over the selected range":
        assert [(int(r[1]), int(r[2])) for r in rows if r[0] == "chat"] == [(30, 20)], rows
        assert {r[0] for r in rows} == {"chat", "email"}, rows
    elif title == "Latest unsatisfied ratings":
        assert [(r[1], r[5]) for r in rows] == [("chat", "too slow")], rows
    elif title == "CSAT by $dimension over the selected range":  # $dimension = channel
        assert [(r[0], int(r[1]), int(r[2]), int(r[5]), int(r[6])) for r in rows] == [
            ("chat", 30, 20, 4, 1), ("email", 8, 8, 0, 0), ("web", 0, 0, 0, 0)], rows
        assert [r[3] for r in rows] == [pytest.approx(200 / 3), pytest.approx(100), None], rows  # no ratings: None
    elif title == "Volume and SLA breaches over the selected range":
        assert [tuple(int(x) for x in r) for r in rows] == [(48, 6, 4, 2, 1)], rows
    elif title == "Dead letters by reason over the selected range":
        assert [(r[0], r[1], int(r[2])) for r in rows] == [("invalid_rating", "cleaner", 2),
                                                            ("unparseable_payload", "jsonl", 1)], rows
    else:
        return False
    return True


CHECKED = {"CSAT per window by channel", "Rated feedback per window by channel",
           "CSAT vs same time last week (all channels)", "Resolution time by channel (mean) and SLA breaches",
           "CSAT by channel over the selected range", "Latest unsatisfied ratings",
           "CSAT by $dimension over the selected range", "Volume and SLA breaches over the selected range",
           "Dead letters by reason over the selected range"}


@pytest.fixture(params=["chdb", "server"])
def loaded_clickhouse(request: pytest.FixtureRequest, services: object, tmp_path: Path) -> Iterator[ClickHouse]:
    ch = connect(clickhouse_url(request.param, tmp_path, "dash"))
    try:
        migrate(ch)
        _load_cells(ch)
        yield ch
        if request.param == "server":
            ch.execute(f"DROP DATABASE {ch.database}")
    finally:
        ch.close()


def test_clickhouse_panel_queries(loaded_clickhouse: ClickHouse) -> None:
    ch = loaded_clickhouse
    checked = set()
    for name, title, sql in SQL:
        rows = ch.query(_sql(sql, ch.database))
        assert rows, f"{name}: no rows over the loaded cells"
        if _check(title, rows):
            checked.add(title)
    assert checked == CHECKED, f"panels with a check that were not found: {CHECKED - checked}"
