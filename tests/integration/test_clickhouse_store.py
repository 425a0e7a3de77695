"""The window store's SQL on both engines (chDB and the Debian ClickHouse server): the real WindowWorker and
WindowStore, with simulated crashes, must leave exactly the batch recomputation in ClickHouse; roll-ups,
seed formulas and hostile dimension values are checked against offline computations."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from domain.aggregates import WindowAgg
from domain.entities import CaseRules, batch_cells
from domain.windows import Windower
from sinks.clickhouse import ClickHouse, connect
from sinks.queries import seed_metrics, totals, windows
from sinks.window_store import WindowStore
from streams.window_worker import Item, WindowWorker
from tests.integration.offline import clickhouse_url

pytestmark = pytest.mark.integration

DIMS = ("all", "channel", "team")
RULES = CaseRules({"high": 3600}, {"high": 4 * 3600}, 30 * 86400 * 1000)
BASE = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOSTILE = ["O'Brien", "x'); DROP TABLE window_cells; --", "\\N", "é漢字🙂", "a" * 5000, "tab\there", "%(t)s"]


def make_events(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    base = {"agent": None, "category": None, "product": None, "source": "test", "customer_id": None,
            "ingest_time": BASE}
    feedback = []
    for i in range(600):
        score = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 3.666667, None])
        feedback.append({**base, "event_id": f"f{i}", "rating_id": f"r{rng.randrange(450)}",
                         "rating_version": rng.randrange(3), "event_time": BASE + rng.randrange(3 * 3600_000),
                         "channel": rng.choice(["chat", "email"]), "team": rng.choice([*HOSTILE, None]),
                         "ticket_id": f"t{rng.randrange(120)}", "native_value": None, "native_scale": "1-5",
                         "score": score, "satisfied": None if score is None else score >= 4, "comment": None,
                         "sentiment": None})
    tickets = []
    for t in range(120):
        created = BASE + rng.randrange(3600_000)
        steps = [("created", created), ("first_response", created + rng.randrange(-600_000, 7200_000)),
                 ("resolved", created + rng.randrange(-600_000, 8 * 3600_000))]
        if rng.random() < 0.2:
            steps += [("reopened", created + 9 * 3600_000), ("resolved", created + 10 * 3600_000)]
        for j, (status, at) in enumerate(steps):
            tickets.append({**base, "event_id": f"t{t}-{j}", "ticket_id": f"t{t}", "status": status,
                            "event_time": at, "channel": "email", "team": rng.choice(["a", "b"]),
                            "priority": rng.choice(["high", "low"])})
    rng.shuffle(feedback)
    rng.shuffle(tickets)
    return feedback, tickets


def test_store_equals_batch_recomputation_with_crashes(ch: ClickHouse) -> None:
    rng = random.Random(5)
    feedback, tickets = make_events(rng)
    store = WindowStore(ch, "fb", "tk", 60, (3600, 86400))
    logs = {("fb", p): [] for p in range(2)} | {("tk", p): [] for p in range(2)}
    for r in feedback:
        log = logs[("fb", hash(r["rating_id"]) % 2)]
        log.append(Item("fb", hash(r["rating_id"]) % 2, len(log), "feedback", r))
    for r in tickets:
        log = logs[("tk", hash(r["ticket_id"]) % 2)]
        log.append(Item("tk", hash(r["ticket_id"]) % 2, len(log), "ticket", r))

    def new_worker() -> WindowWorker:
        return WindowWorker(Windower(60, 10, 5), store, DIMS, RULES)

    worker, quarantined = new_worker(), 0
    positions = dict.fromkeys(logs, 0)
    while any(positions[s] < len(log) for s, log in logs.items()):
        source = rng.choice([s for s, log in logs.items() if positions[s] < len(log)])
        batch = logs[source][positions[source]:positions[source] + rng.randrange(1, 80)]
        result = worker.process(batch, now=0.0)
        quarantined += len(result.quarantined)
        if rng.random() < 0.15:  # crash after the write, before the ack: replay with a fresh worker
            worker = new_worker()
            continue
        positions[source] += len(batch)

    expected = batch_cells(feedback, tickets, DIMS, 60_000, RULES)
    for dimension in DIMS:
        stored = {(dimension, r.dimension_value, r.window_start * 1000): r.agg for r in windows(ch, dimension, 60)}
        want = {k: v for k, v in expected.items() if k[0] == dimension}
        assert stored == want, dimension
    # hostile team names came back verbatim
    teams = {r.dimension_value for r in totals(ch, "team", 60)}
    assert set(HOSTILE) <= teams
    # roll-up to 1 h equals a direct 1 h computation
    hourly = {("channel", r.dimension_value, r.window_start * 1000): r.agg for r in windows(ch, "channel", 60, 3600)}
    assert hourly == {k: v for k, v in batch_cells(feedback, tickets, ("channel",), 3600_000, RULES).items()}
    # the stored 1 h and 1 d roll-ups (kept by the store) equal direct computations and the summed minute cells
    for size in (3600, 86400):
        direct = batch_cells(feedback, tickets, DIMS, size * 1000, RULES)
        for dimension in DIMS:
            stored_rollup = windows(ch, dimension, size)
            assert {(dimension, r.dimension_value, r.window_start * 1000): r.agg for r in stored_rollup} == {
                k: v for k, v in direct.items() if k[0] == dimension}, (size, dimension)
            assert stored_rollup == windows(ch, dimension, 60, size)
    assert quarantined > 0  # the generator makes negative durations

    # seed formulas, computed independently here
    latest: dict[str, dict[str, Any]] = {}
    for r in feedback:
        old = latest.get(r["rating_id"])
        if old is None or (r["rating_version"], r["event_id"]) > (old["rating_version"], old["event_id"]):
            latest[r["rating_id"]] = r
    cases: dict[str, dict[str, list[int]]] = {}
    for t in tickets:
        cases.setdefault(t["ticket_id"], {}).setdefault(t["status"], []).append(t["event_time"])
    hours = {tid: (max(c["resolved"]) - min(c["created"])) / 3600_000 for tid, c in cases.items()
             if max(c["resolved"]) >= min(c["created"])}
    terms = [5 * r["score"] / (r["score"] + hours[r["ticket_id"]]) for r in latest.values()
             if r["score"] is not None and r["ticket_id"] in hours]
    rtts = [max(c["resolved"]) // 1000 / (max(c["resolved"]) // 1000 - min(c["created"]) // 1000)
            for c in cases.values() if max(c["resolved"]) // 1000 > min(c["created"]) // 1000]
    seed = seed_metrics(ch, "all", 86400)
    assert sum(s.seed_csat_n for s in seed) == len(terms)
    assert sum((s.seed_csat or 0) * s.seed_csat_n for s in seed) == pytest.approx(sum(terms), rel=1e-9)
    assert sum(s.seed_rtt_m for s in seed) == len(rtts)
    assert sum((s.seed_rtt or 0) * s.seed_rtt_m for s in seed) == pytest.approx(sum(rtts), rel=1e-9)


def test_empty_window_has_no_csat(ch: ClickHouse) -> None:
    assert windows(ch, "channel", 60) == []
    assert WindowAgg().csat_percent is None


def test_report_rolls_up_and_renders(ch: ClickHouse) -> None:
    import csv
    import io
    import json

    from sinks.report import build_report, render

    feedback, tickets = make_events(random.Random(8))
    worker = WindowWorker(Windower(60, 10, 5), WindowStore(ch, "fb", "tk", 60), DIMS, RULES)
    worker.process([Item("fb", 0, i, "feedback", r) for i, r in enumerate(feedback)]
                   + [Item("tk", 0, i, "ticket", r) for i, r in enumerate(tickets)], now=0.0)
    expected = batch_cells(feedback, tickets, ("channel",), 86_400_000, RULES)
    report = build_report(ch, "channel", "1d", 60, 0, 2**32 - 1)
    rows = report.rows
    assert {(r["value"], r["rated"], r["satisfied"], r["resolved"]) for r in rows} == {
        (k[1], v.rated, v.satisfied, v.resolved) for k, v in expected.items()}
    assert [json.loads(line)["value"] for line in render(report, "jsonl").splitlines()] == [r["value"] for r in rows]
    assert [r["value"] for r in json.loads(render(report, "json"))["rows"]] == [r["value"] for r in rows]
    assert len(list(csv.DictReader(io.StringIO(render(report, "csv"))))) == len(rows)
    assert render(report, "table").splitlines()[0].split()[:3] == ["window_start", "value", "rated"]


def test_secondary_answers_and_sentiment_model_are_stored(ch: ClickHouse) -> None:
    """feedback_event v2 from a raw submission (cleaner -> Avro -> store): the survey's other answers land in the
    secondary_* arrays, the text model's provenance in its columns; only the CSAT question is a rating."""
    from domain.clean import clean
    from satpulse import codec

    raw = {"event_id": "fd-1", "source": "freshdesk", "channel": "email", "event_time": BASE, "ticket_id": "9",
           "rating_value": 103, "rating_scale": "freshdesk", "survey_id": "s1",
           "secondary_ratings": [{"question_id": "q7", "rating_value": -101, "rating_scale": "freshdesk"},
                                 {"question_id": "q8", "rating_value": "O'Brien", "rating_scale": "good_bad"}]}
    mention = {"event_id": "tw-1", "source": "social", "channel": "twitter", "event_time": BASE,
               "comment": "slow again", "sentiment": -0.6, "sentiment_label": "negative", "sentiment_model": "vader"}
    with pytest.raises(Exception, match="q8"):  # an unknown answer names its question and dead-letters the event
        clean(raw, BASE, 0)
    raw["secondary_ratings"][1] = {"question_id": "q8", "rating_value": "good", "rating_scale": "good_bad"}
    records = []
    for submission in (raw, mention):
        cleaned = clean(submission, BASE, 0)
        records.append(codec.decode(codec.encode(cleaned.schema, cleaned.record), codec.FEEDBACK_EVENT)[1])
    store = WindowStore(ch, "fb", "tk", 60)
    worker = WindowWorker(Windower(60, 60, 5), store, DIMS, RULES)
    worker.process([Item("fb", 0, i, "feedback", r) for i, r in enumerate(records)], BASE / 1000)
    rows = ch.query(
        "SELECT event_id, survey_id, secondary_question_ids, secondary_native_values, secondary_scores, "
        f"secondary_satisfied, sentiment_label, sentiment_model FROM {ch.database}.feedback_events ORDER BY event_id")
    assert [tuple(r) for r in rows] == [
        ("fd-1", "s1", ["q7", "q8"], ["-101", "good"], [pytest.approx(2.333333), None], [0, 1], None, None),
        ("tw-1", None, [], [], [], [], "negative", "vader")]
    assert [(r.agg.rated, r.agg.satisfied) for r in windows(ch, "all", 60)] == [(1, 1)]  # the CSAT question only


def schema(ch: ClickHouse) -> list[tuple[Any, ...]]:
    """Every table of the store with its DDL, and the migrations recorded."""
    tables = ch.query("SELECT name, create_table_query FROM system.tables WHERE database = %(d)s ORDER BY name",
                      {"d": ch.database})
    versions = ch.query(f"SELECT version FROM {ch.database}.schema_migrations ORDER BY version")
    return [*map(tuple, tables), *map(tuple, versions)]


def test_rekey_migration_keeps_every_cell(services: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Migrations 4 and 5 rebuild window_cells (time-first sorting key) and the event tables (keyed by
    identity), which needs every worker stopped: on a store written at version 3, a worker's start-up
    (``migrate``) refuses with MigrationRequired and changes nothing; ``satpulse migrate`` applies them and
    says so, every row is kept, the new keys are in place, and running the migrations again changes nothing."""
    from satpulse import cli
    from sinks import migrations

    for engine_name in ("chdb", "server"):
        url = clickhouse_url(engine_name, tmp_path / engine_name)
        engine = connect(url)
        monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        migrations.migrate(engine)
        store = WindowStore(engine, "fb", "tk", 60)
        worker = WindowWorker(Windower(60, 60, 5), store, DIMS, RULES)
        feedback, tickets = make_events(random.Random(5))
        items = [Item("fb", 0, i, "feedback", r) for i, r in enumerate(feedback)]
        items += [Item("tk", 0, i, "ticket", r) for i, r in enumerate(tickets)]
        worker.process(items, BASE / 1000)
        tables = ("window_cells", "feedback_events", "ticket_events")
        before = [sorted(map(tuple, engine.query(f"SELECT * FROM {engine.database}.{t} FINAL"))) for t in tables]
        monkeypatch.undo()
        old_schema = schema(engine)
        with pytest.raises(migrations.MigrationRequired, match=r"4, 5 .*stop all workers and run `satpulse migrate`"):
            migrations.migrate(engine)
        assert schema(engine) == old_schema, engine_name
        engine.close()  # every worker stopped: chDB's data directory is free for the command
        assert cli.main(["migrate", "--url", url]) == 0
        applied = capsys.readouterr().out.splitlines()
        assert [line.split(":")[0] for line in applied] == [f"applied migration {v}" for v, _ in
                                                            migrations.MIGRATIONS if v > 3]
        assert "rebuild window_cells (the old table is kept as window_cells_previous)" in applied[0]
        engine = connect(url)
        assert migrations.migrate(engine) == []
        after = [sorted(map(tuple, engine.query(f"SELECT * FROM {engine.database}.{t} FINAL"))) for t in tables]
        ddl = [engine.query("SELECT create_table_query FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                            {"d": engine.database, "t": t})[0][0] for t in tables]
        engine.close()
        assert all(before) and after == before, engine_name
        assert "ORDER BY (window_seconds, dimension, window_start" in ddl[0], ddl[0]
        assert "ORDER BY (rating_id, rating_version, event_id)" in ddl[1], ddl[1]
        assert "ORDER BY (ticket_id, event_id)" in ddl[2], ddl[2]


@pytest.mark.parametrize("engine_name", ["chdb", "server"])
@pytest.mark.parametrize("old_version", [0, 3])
def test_a_database_without_data_migrates_fully_at_worker_start(services: Any, tmp_path: Path, engine_name: str,
                                                                 old_version: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild of tables that hold no rows puts nothing at stake, so a worker's start-up applies every
    pending migration, the rebuilding ones too: on a fresh database and on an empty one at version 3."""
    from sinks import migrations

    engine = connect(clickhouse_url(engine_name, tmp_path))
    try:
        monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:old_version])
        migrations.migrate(engine)
        monkeypatch.undo()
        assert migrations.migrate(engine) == [v for v, _ in migrations.MIGRATIONS if v > old_version]
        ddl = engine.query("SELECT create_table_query FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                           {"d": engine.database, "t": "window_cells"})[0][0]
    finally:
        engine.close()
    assert "ORDER BY (window_seconds, dimension, window_start" in ddl, ddl


def test_migration_required_is_not_retried_as_a_clickhouse_error() -> None:
    """The worker connects and migrates inside retry_clickhouse, which retries ClickHouseError only: a
    pending rebuild ends the start-up at once, with the instruction, instead of waiting forever."""
    from sinks.clickhouse import ClickHouseError
    from sinks.migrations import MigrationRequired
    from streams.pipeline import retry_clickhouse  # the one the worker's start-up calls

    def start() -> None:
        raise MigrationRequired([4, 5])

    assert not issubclass(MigrationRequired, ClickHouseError)
    with pytest.raises(MigrationRequired, match="satpulse migrate"):
        retry_clickhouse("connect", start, sleep=lambda seconds: pytest.fail("retried"))


def test_an_event_stored_again_at_a_later_offset_is_one_row_the_earliest_copy(ch: ClickHouse) -> None:
    """A clean-stage replay publishes clean events again at later offsets and the window stage stores them
    again: FINAL shows each event once, at its earliest offset, so a reader limited to the offsets its source
    had persisted before the replay still finds every event."""
    feedback, tickets = make_events(random.Random(11))
    store = WindowStore(ch, "fb", "tk", 60)
    for first in (0, 10_000):  # the original, then the replayed copies
        store.write([], [(0, first + i, r) for i, r in enumerate(feedback)],
                    [(0, first + i, r) for i, r in enumerate(tickets)])
    for table, events in (("feedback_events", feedback), ("ticket_events", tickets)):
        offsets = [int(o) for (o,) in ch.query(f"SELECT source_offset FROM {ch.database}.{table} FINAL")]
        assert sorted(offsets) == list(range(len(events))), table
    ratings = store.load_ratings(("fb", 0), [r["rating_id"] for r in feedback], len(feedback) - 1)
    cases = store.load_ticket_events(("tk", 0), [t["ticket_id"] for t in tickets], len(tickets) - 1)
    assert set(ratings) == {r["rating_id"] for r in feedback}
    assert sum(map(len, cases.values())) == len(tickets)


def test_a_new_owner_discards_the_events_stored_after_the_high_water_mark(ch: ClickHouse) -> None:
    """An owner died between storing a batch's events and writing its cells: the next one deletes exactly the
    events of that source after its high-water mark (-1: all of them), so reads by offset no longer find them."""
    feedback, tickets = make_events(random.Random(7))
    other = [{**r, "event_id": f"{r['event_id']}-p1", "rating_id": f"{r['rating_id']}-p1"} for r in feedback]
    store = WindowStore(ch, "fb", "tk", 60)
    store.write([], [(0, i, r) for i, r in enumerate(feedback)] + [(1, i, r) for i, r in enumerate(other)],
                [(0, i, r) for i, r in enumerate(tickets)])
    store.discard_uncounted_events(("fb", 0), 99)
    store.discard_uncounted_events(("tk", 0), -1)
    store.discard_uncounted_events(("tk", 1), -1)  # nothing stored: no mutation
    rows = ch.query(f"SELECT source_partition, count(), max(source_offset) FROM {ch.database}.feedback_events "
                    "GROUP BY source_partition ORDER BY source_partition")
    assert [tuple(map(int, r)) for r in rows] == [(0, 100, 99), (1, len(other), len(other) - 1)]
    assert ch.query(f"SELECT count() FROM {ch.database}.ticket_events")[0][0] == 0
    ids = {r["rating_id"] for r in feedback + other}
    assert set(store.load_ratings(("fb", 0), ids, 10**9)) == {r["rating_id"] for r in feedback[:100]}
    assert set(store.load_ratings(("fb", 1), ids, 10**9)) == {r["rating_id"] for r in other}


def test_entity_lookups_of_a_whole_batch_fit_the_query_size_limit(ch: ClickHouse) -> None:
    """A worker taking over a partition looks up every id of a 20,000-event batch: far more than one IN list
    within ClickHouse's 256 KiB max_query_size (refused, and the refusal would be retried forever)."""
    feedback, tickets = make_events(random.Random(3))
    store = WindowStore(ch, "fb", "tk", 60)
    store.write([], [(0, i, r) for i, r in enumerate(feedback)], [(0, i, r) for i, r in enumerate(tickets)])
    padding = [f"missing-rating-{i:06d}-{'x' * 20}" for i in range(20_000)]
    ratings = store.load_ratings(("fb", 0), [*padding, *(r["rating_id"] for r in feedback)], len(feedback))
    cases = store.load_ticket_events(("tk", 0), [*padding, *(t["ticket_id"] for t in tickets)], len(tickets))
    assert set(ratings) == {r["rating_id"] for r in feedback}
    assert sum(map(len, cases.values())) == len(tickets)
