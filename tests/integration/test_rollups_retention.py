"""Stored roll-ups (sinks/rollups.py) and retention (sinks/retention.py) on both engines (chDB and the Debian
ClickHouse 18.16 server): roll-ups equal an offline computation and the sum of the minute cells after crashes
between the cell insert and the roll-up; retention deletes old rows only."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.entities import batch_cells
from domain.windows import CHECKPOINT_KEY, Windower
from satpulse.deadletter import Origin, encode_dead_letter
from satpulse.settings import Settings
from sinks.clickhouse import ClickHouse, ClickHouseError, Params
from sinks.dead_letter_store import DeadLetterStore
from sinks.declared_columns import CELLS
from sinks.mutations import wait_for_mutations
from sinks.queries import windows
from sinks.report import build_report
from sinks.retention import apply_retention
from sinks.rollups import Rollups
from sinks.window_store import WindowStore
from streams.window_worker import Item, WindowWorker
from tests.integration.test_clickhouse_store import BASE, DIMS, RULES, make_events

pytestmark = pytest.mark.integration

SIZES = (3600, 86400)
DAY = 86400


class Crash(Exception):
    """The worker process dies."""


class FlakyClickHouse:
    """The engine, except that a roll-up statement (an INSERT ... SELECT, run after the batch's cells were
    inserted) fails at random: ClickHouse or the worker going away between the cell insert and a roll-up."""

    def __init__(self, inner: ClickHouse, rng: random.Random, rates: dict[int, float]) -> None:
        self.inner, self.rng, self.rates = inner, rng, rates  # failure probability by roll-up size
        self.database = inner.database
        self.failures: Counter[int] = Counter()  # by roll-up size: 3600 = before the hours, 86400 = before the days

    def execute(self, sql: str, params: Params | None = None) -> None:
        if sql.startswith("INSERT INTO") and params and self.rng.random() < self.rates[params["size"]]:
            self.failures[params["size"]] += 1
            raise ClickHouseError("simulated failure before the roll-up")
        self.inner.execute(sql, params)

    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        return self.inner.query(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.inner.insert(table, columns, rows)

    def close(self) -> None:
        self.inner.close()


def three_days(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """make_events stretched from 3 hours to 3 days (durations x24), so batches span hours and days."""
    feedback, tickets = make_events(rng)
    for r in feedback + tickets:
        r["event_time"] = BASE + (r["event_time"] - BASE) * 24
    return feedback, tickets


def source_logs(feedback: list[dict[str, Any]], tickets: list[dict[str, Any]]) -> dict[tuple[str, int], list[Item]]:
    """Two partitions per topic (ratings and cases keyed by id, as the publisher does), in event-time order so
    that consecutive batches move through the hours and days."""
    logs: dict[tuple[str, int], list[Item]] = {(t, p): [] for t in ("fb", "tk") for p in range(2)}
    for topic, kind, key, records in (("fb", "feedback", "rating_id", feedback),
                                      ("tk", "ticket", "ticket_id", tickets)):
        for r in sorted(records, key=lambda r: r["event_time"]):
            partition = sum(map(ord, r[key])) % 2
            log = logs[(topic, partition)]
            log.append(Item(topic, partition, len(log), kind, r))
    return logs


def stored_rollup_rows(ch: ClickHouse) -> list[tuple[Any, ...]]:
    """Every stored roll-up row per source (FINAL), without written_at."""
    return ch.query(
        f"SELECT dimension, dimension_value, window_seconds, toUInt32(window_start) AS ws, source_topic, "
        f"source_partition, {CELLS.merged_sql}, max(version) FROM {ch.database}.window_cells FINAL "
        "WHERE window_seconds IN %(sizes)s "
        "GROUP BY dimension, dimension_value, window_seconds, ws, source_topic, source_partition "
        "ORDER BY dimension, dimension_value, window_seconds, ws, source_topic, source_partition", {"sizes": SIZES})


def test_rollups_exact_after_crashes_between_cells_and_rollup(ch: ClickHouse, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr("sinks.rollups.MAX_KEYS_PER_STATEMENT", 3)  # levels in several statements: partial levels
    rng = random.Random(21)
    feedback, tickets = three_days(rng)
    logs = source_logs(feedback, tickets)
    flaky = FlakyClickHouse(ch, rng, {3600: 0.08, DAY: 0.3})
    crashes = 0

    def sleep(_: float) -> None:  # called by the worker's retry loop after a failed write
        if rng.random() < 0.7:
            raise Crash  # the process dies: the batch was not acknowledged and is replayed after a restart
        # otherwise the worker retries the same write in-process

    def restart() -> WindowWorker:
        return WindowWorker(Windower(60, 10, 5), WindowStore(flaky, "fb", "tk", 60, SIZES), DIMS, RULES,
                            sleep=sleep)

    worker, positions = restart(), dict.fromkeys(logs, 0)
    while any(positions[s] < len(log) for s, log in logs.items()):
        source = rng.choice([s for s, log in logs.items() if positions[s] < len(log)])
        batch = logs[source][positions[source]:positions[source] + rng.randrange(1, 60)]
        try:
            worker.process(batch, now=0.0)
        except Crash:
            worker, crashes = restart(), crashes + 1
            continue
        positions[source] += len(batch)
    assert crashes >= 3 and flaky.failures[3600] >= 3 and flaky.failures[86400] >= 3  # both gaps were hit

    for size in SIZES:
        expected = batch_cells(feedback, tickets, DIMS, size * 1000, RULES)
        for dimension in DIMS:
            stored = windows(ch, dimension, size)  # the stored roll-up rows
            assert {(dimension, r.dimension_value, r.window_start * 1000): r.agg for r in stored} == {
                k: v for k, v in expected.items() if k[0] == dimension}, (size, dimension)
            assert stored == windows(ch, dimension, 60, size)  # = the minute cells summed at query time
    assert len({r.window_start for r in windows(ch, "all", DAY)}) >= 3

    # recomputing every roll-up from scratch gives the same rows and versions: a replay is idempotent
    before = stored_rollup_rows(ch)
    starts = ch.query(f"SELECT source_topic, source_partition, groupUniqArray(toUInt32(window_start)) "
                      f"FROM {ch.database}.window_cells WHERE window_seconds = 60 "
                      "GROUP BY source_topic, source_partition")
    Rollups(ch, 60, SIZES).refresh({(t, int(p)): [int(s) for s in values] for t, p, values in starts})
    assert stored_rollup_rows(ch) == before


def test_report_reads_stored_rollups_backfilled_when_enabled(ch: ClickHouse) -> None:
    feedback, tickets = three_days(random.Random(8))
    fb = [Item("fb", 0, i, "feedback", r) for i, r in enumerate(feedback)]
    tk = [Item("tk", 0, i, "ticket", r) for i, r in enumerate(tickets)]
    first = fb[:len(fb) // 2] + tk[:len(tk) // 2]  # both halves hold both sources
    second = fb[len(fb) // 2:] + tk[len(tk) // 2:]

    def process(batch: list[Item], sizes: Sequence[int]) -> None:
        WindowWorker(Windower(60, 10, 5), WindowStore(ch, "fb", "tk", 60, sizes), DIMS, RULES).process(batch, 0.0)

    def report(window: str, stored: Sequence[int]) -> list[dict[str, Any]]:
        """Report rows without the seed columns (a float avg() whose rounding varies between runs)."""
        rows = build_report(ch, "channel", window, 60, 0, 2**32 - 1, stored).rows
        return [{k: v for k, v in r.items() if not k.startswith("seed_")} for r in rows]

    process(first, ())  # roll-ups off
    assert report("1h", SIZES) == []  # the report reads stored roll-ups, and there are none yet
    assert report("1h", ()) != []
    process(second, SIZES)  # roll-ups on: the first write per source rolls up its whole history too
    for window, size in (("1h", 3600), ("1d", DAY)):
        rows = report(window, SIZES)
        assert rows == report(window, ())
        expected = batch_cells(feedback, tickets, ("channel",), size * 1000, RULES)
        assert sorted((r["window_start"], r["value"], r["rated"], r["satisfied"], r["resolved"], r["rt_breaches"])
                      for r in rows) == sorted(
            (datetime.fromtimestamp(k[2] // 1000, UTC).isoformat(), k[1], v.rated, v.satisfied, v.resolved,
             v.resolution_breaches) for k, v in expected.items())


def test_retention_deletes_old_rows_only(ch: ClickHouse) -> None:
    feedback, tickets = three_days(random.Random(3))
    store = WindowStore(ch, "fb", "tk", 60, SIZES)
    WindowWorker(Windower(60, 10, 5), store, DIMS, RULES).process(
        [Item("fb", 0, i, "feedback", r) for i, r in enumerate(feedback)]
        + [Item("tk", 0, i, "ticket", r) for i, r in enumerate(tickets)], now=0.0)
    letters = DeadLetterStore(ch)
    for offset, day in enumerate((0, 4)):
        letters.add(encode_dead_letter("missing_field", "x", "cleaner", b"{}", Origin("in", 0, offset),
                                       BASE + day * DAY * 1000)[1], "dl", 0, offset)
    letters.flush()
    db, base_s = ch.database, BASE // 1000
    now = base_s + 10 * DAY + 3600
    settings = Settings(retention_events_days=9, retention_minute_cells_days=9, retention_hour_cells_days=8,
                        retention_dead_letters_days=7)  # day cells: kept forever

    def count(table: str, where: str, **params: Any) -> int:
        return int(ch.query(f"SELECT count() FROM {db}.{table} WHERE {where}", params)[0][0])

    def cells(size: int, op: str, at: int) -> int:
        return count("window_cells", f"window_seconds = %(w)s AND dimension != %(c)s AND "
                                     f"toUInt32(window_start) {op} %(at)s", w=size, c=CHECKPOINT_KEY[0], at=at)

    kept = {"minute": cells(60, ">=", base_s + DAY), "hour": cells(3600, ">=", base_s + 2 * DAY),
            "day": cells(DAY, ">=", 0), "events": count("feedback_events", "toUInt32(event_time) >= %(at)s",
                                                        at=base_s + DAY),
            "checkpoints": count("window_cells", "dimension = %(c)s", c=CHECKPOINT_KEY[0])}
    assert cells(60, "<", base_s + DAY) and cells(3600, "<", base_s + 2 * DAY) and kept["checkpoints"]

    planned = apply_retention(ch, settings, now, dry_run=True)
    assert {(s.kind, s.table, s.cutoff) for s in planned} == {
        ("events", "feedback_events", base_s + DAY), ("events", "ticket_events", base_s + DAY),
        ("minute cells", "window_cells", base_s + DAY), ("hour cells", "window_cells", base_s + 2 * DAY),
        ("dead letters", "dead_letters", base_s + 3 * DAY)}
    assert all(s.rows > 0 and not s.scheduled for s in planned)
    assert cells(60, "<", base_s + DAY) > 0  # a dry run deletes nothing

    done = apply_retention(ch, settings, now)
    assert [s.rows for s in done] == [s.rows for s in planned] and all(s.scheduled for s in done)
    assert wait_for_mutations(ch, timeout=60)
    assert cells(60, "<", base_s + DAY) == 0 and cells(3600, "<", base_s + 2 * DAY) == 0
    assert count("feedback_events", "toUInt32(event_time) < %(at)s", at=base_s + DAY) == 0
    assert count("ticket_events", "toUInt32(event_time) < %(at)s", at=base_s + DAY) == 0
    assert {"minute": cells(60, ">=", base_s + DAY), "hour": cells(3600, ">=", base_s + 2 * DAY),
            "day": cells(DAY, ">=", 0), "events": count("feedback_events", "toUInt32(event_time) >= %(at)s",
                                                        at=base_s + DAY),
            "checkpoints": count("window_cells", "dimension = %(c)s", c=CHECKPOINT_KEY[0])} == kept
    assert ch.query(f"SELECT origin_offset FROM {db}.dead_letters FINAL") == [(1,)]
    assert store.persisted_offset(("fb", 0)) == len(feedback) - 1  # the high-water marks survive
    assert all(s.rows == 0 and not s.scheduled for s in apply_retention(ch, settings, now))  # nothing more due
