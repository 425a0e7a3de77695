"""Benchmark harness (issue 7): our worker vs a bare consumer, a naive Faust agent and Quix Streams.

``make bench`` or ``.venv/bin/python bench/run.py [--events N] [--partitions P]``. Starts Kafka (settings from
the environment), produces N raw submissions once to the ingest topic of a fresh namespace, then runs each
contender on that same topic, one after the other, and writes a markdown table to bench/results/latest.md.
``--modes latency,scaling,memory`` adds the measurements of bench/latency.py, bench/scaling.py and
bench/memory.py, each as its own section of the results file. What is measured and how: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from adapters.emit import key_of  # noqa: E402
from devtools import services  # noqa: E402
from devtools.sample import sample_submissions, sample_ticket_events  # noqa: E402
from devtools.worker_process import WorkerProcess, committed_lag, read_records  # noqa: E402
from domain.aggregates import WindowAgg  # noqa: E402
from domain.clean import Cleaned, Rejected, clean, parse_json_object  # noqa: E402
from domain.entities import CaseRules, WindowKey, batch_cells, cell_keys  # noqa: E402
from satpulse import topics  # noqa: E402
from satpulse.record_batches import send_in_batches  # noqa: E402
from satpulse.settings import get_settings  # noqa: E402

POLL_SECONDS = 0.2
# window grace period of every windowing contender: the input is shuffled over hours of event time, so every
# window stays open until the end (Quix drops events beyond its grace; ours would apply them as corrections)
GRACE_SECONDS = 5 * 3600
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    events: int = 0
    rate: float | None = None  # events/s over the steady interval (see README)
    wall_s: float | None = None  # process launch -> everything consumed
    rss_mb: float | None = None
    cpu_per_m: float | None = None  # CPU s per 1M events over the steady interval
    cpu_total_per_m: float | None = None  # whole process life, start-up included
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # exited meanwhile
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo += parents.get(current, [])
    return tree


def proc_cpu(pid: int) -> float:
    """utime + stime in seconds of ``pid`` and its live descendants (and of their waited-for children)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += sum(int(f) for f in _stat_fields(member)[11:15]) / CLK_TCK
        except OSError:
            continue
    return total


def proc_hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of ``pid`` plus those of its live descendants: an upper bound of their peak together."""
    total = 0.0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")), 0.0)
    return total


def grace_seconds(args: argparse.Namespace) -> int:
    """The windowing contenders' grace: GRACE_SECONDS for the shuffled input, the worker's default (10 s) for
    an input in event-time order (``--input-hours``)."""
    return GRACE_SECONDS if args.input_hours is None else get_settings().grace_seconds


# ----------------------------------------------------------------------------------------------- data


def generate(n: int, seed: int = 7, hours: float | None = None) -> list[tuple[bytes, bytes]]:
    """``n`` raw submissions as (key, JSON value): ~80 % feedback, ~20 % ticket lifecycle events.

    Default (the throughput input): shuffled; feedback event times lie in the last hour, ticket lifecycles
    (which span up to 3 h after creation) are created 4 h to 3 h ago, so that no event lies in the future.
    ``hours``: a steady stream instead, in event-time order; ratings and case creations spread evenly over
    ``hours`` hours ending 3 h ago (each case's later events follow at their own times).
    """
    now_ms = int(time.time() * 1000)
    cases = max(1, int(n * 0.2 / 3.2))
    if hours is None:
        tickets = list(sample_ticket_events(cases, now_ms - 4 * 3_600_000, 3_600_000, seed))[: n // 5]
        feedback = list(sample_submissions(n - len(tickets), now_ms - 3_600_000, 3_600_000, seed))
        events = feedback + tickets
        random.Random(seed).shuffle(events)
    else:
        span_ms = int(hours * 3_600_000)
        start_ms = now_ms - 3 * 3_600_000 - span_ms
        tickets = list(sample_ticket_events(cases, start_ms, span_ms, seed))[: n // 5]
        events = sorted(list(sample_submissions(n - len(tickets), start_ms, span_ms, seed)) + tickets,
                        key=lambda e: int(e["event_time"]))
    return [(key_of(e) or b"", json.dumps(e).encode()) for e in events]


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Produce once (acks=1), partitioned by key with murmur2 as Kafka's Java clients do, as record batches of
    up to 1 MB per partition (a kafka-python send loop managed ~25k messages/s, which capped the scaling runs);
    returns seconds taken."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    async def send_all() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, max_batch_size=1024 * 1024,
                                    max_request_size=8 * 1024 * 1024)
        await producer.start()
        try:
            partitions = sorted(await producer.partitions_for(topic))
            partitioner = DefaultPartitioner()
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in messages:
                by_partition.setdefault(partitioner(key, partitions, partitions), []).append((key, value))
            pending = []
            for partition, records in by_partition.items():
                pending += await send_records(producer, topic, partition, records)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    started = time.monotonic()
    asyncio.run(send_all())
    return time.monotonic() - started


async def send_records(producer: Any, topic: str, partition: int,
                       records: list[tuple[bytes, bytes]]) -> list[asyncio.Future[Any]]:
    """Send ``records`` as record batch(es) to one partition; returns the delivery futures (not awaited)."""
    return [future for _, future in await send_in_batches(producer, topic, partition, records)]


# ----------------------------------------------------------------------------------------------- measuring


def follow(name: str, bootstrap: str, group: str, topic_names: Callable[[], list[str]], total: int, pid: int,
           launched: float, timeout: float, alive: Callable[[], bool]) -> Result:
    """Poll the group's committed lag (every 0.2 s) and the process's CPU until the lag is 0.

    Rate = events committed between the first poll that saw a commit and the poll that saw lag 0, divided by
    that interval. ``total`` is the number of messages the group must consume over all topics (unknown for
    intermediate topics: then the lag over ``topic_names()`` is simply polled down to 0 after the ingest is).
    """
    deadline = time.monotonic() + timeout
    first_t = first_cpu = None
    first_left = 0
    last_lag = -1
    while time.monotonic() < deadline:
        if not alive():
            return Result(name, note=f"process exited early (lag {last_lag})")
        names = topic_names()
        try:
            lag = committed_lag(bootstrap, group, names)
        except Exception as exc:  # the group may not exist yet
            lag, _ = -1, exc
        now, cpu = time.monotonic(), proc_cpu(pid)
        if lag >= 0:
            last_lag = lag
            if first_t is None and lag < total:
                first_t, first_cpu, first_left = now, cpu, lag
            if lag == 0:
                rss = proc_hwm_mb(pid)
                result = Result(name, events=total, wall_s=now - launched, rss_mb=rss,
                                cpu_total_per_m=cpu / total * 1e6)
                assert first_t is not None and first_cpu is not None
                steady = first_left  # events committed after the first poll that saw a commit
                if now > first_t and steady > 0:
                    result.rate = steady / (now - first_t)
                    result.cpu_per_m = (cpu - first_cpu) / steady * 1e6
                else:
                    result.note = "first commit seen only at the end: too few events to measure a rate"
                result.extra = {"first_commit_after_s": first_t - launched, "steady_events": steady,
                                "first_cpu_s": first_cpu}
                return result
        time.sleep(POLL_SECONDS)
    return Result(name, note=f"timed out after {timeout:.0f}s (lag {last_lag})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def worker_env(ns: str, worker_id: str, partitions: int, clickhouse_url: str,
               grace_seconds: int | None = GRACE_SECONDS, **extra: str) -> dict[str, str]:
    """Environment of a ``satpulse worker`` on namespace ``ns``; ``grace_seconds=None`` keeps the default."""
    env = {"SATPULSE_TOPIC_NAMESPACE": ns, "SATPULSE_WORKER_ID": worker_id, "SATPULSE_CLICKHOUSE_URL": clickhouse_url,
           "SATPULSE_TOPIC_PARTITIONS": str(partitions), **extra}
    if grace_seconds is not None:
        env["SATPULSE_GRACE_SECONDS"] = str(grace_seconds)
    return env


def start_workers(env: dict[str, str], count: int, tmp: Path, label: str) -> list[WorkerProcess]:
    """Start ``count`` workers with the same env (so the same worker id / consumer group), worker i on web port
    ``SATPULSE_WORKER_WEB_PORT + i``; each logs to ``tmp/<label>-<i>.log``. Returns once every /metrics answers."""
    base_port = get_settings().worker_web_port
    workers = []
    try:
        for i in range(count):
            port = base_port + i
            worker = WorkerProcess({**env, "SATPULSE_WORKER_WEB_PORT": str(port)}, tmp / f"{label}-{i}.log", port)
            workers.append(worker)
            worker.start(timeout=120)
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


def pids_of(workers: list[WorkerProcess]) -> list[int]:
    return [w.proc.pid for w in workers if w.proc is not None]


def end_offsets_total(bootstrap: str, names: list[str]) -> int:
    """Sum of the end offsets of every partition of ``names`` (= messages ever written to them)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(x, p) for x in names for p in consumer.partitions_for_topic(x) or ()]
        return int(sum(consumer.end_offsets(parts).values()))
    finally:
        consumer.close()


def fresh_namespace(partitions: int, prefix: str = "bench") -> str:
    """A new namespace ``<prefix><hex>`` with every topic created with ``partitions`` partitions."""
    from adapters.publisher import ensure_topics

    ns = f"{prefix}{uuid.uuid4().hex[:8]}"
    settings = get_settings().model_copy(update={"topic_namespace": ns, "topic_partitions": partitions})
    ensure_topics(settings, topics.for_namespace(ns).all())
    return ns


def follow_workers(name: str, bootstrap: str, ns: str, worker_id: str, workers: list[WorkerProcess], n: int,
                   launched: float, timeout: float, checkpoints: Sequence[int] = ()) -> Result:
    """:func:`follow_until_all` for the workers of one consumer group on namespace ``ns``. Workers that run every
    stage consume the ingest topic only and count each clean event in the batch that published it (every ingest
    message produces exactly one message on feedback, tickets or dead letters), so all is done when the ingest
    topic is committed and the clean topics hold their messages."""
    t = topics.for_namespace(ns)
    written = [t.ingest, t.feedback, t.tickets]
    return follow_until_all(name, bootstrap, worker_id, [t.ingest], n, lambda: end_offsets_total(bootstrap, written),
                            pids_of(workers), launched, timeout,
                            lambda: all(w.proc is not None and w.proc.poll() is None for w in workers), checkpoints)


def run_ours(args: argparse.Namespace, ns: str, bootstrap: str, n: int, tmp: Path) -> Result:
    worker_id = f"bench-worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(ns, worker_id, args.partitions, f"chdb://{tmp / 'chdb'}", grace_seconds(args))
    launched = time.monotonic()
    workers = start_workers(env, 1, tmp, "ours-worker")
    ready = time.monotonic() - launched
    try:
        result = follow_workers(f"ours (satpulse worker, {worker_id})", bootstrap, ns, worker_id, workers, n,
                                launched, args.timeout)
        result.extra["metrics_ready_after_s"] = ready
        result.note = (f"ingest {n:,} + {result.extra.get('clean_events', 0):,.0f} clean events published; "
                       f"/metrics up after {ready:.1f}s")
        return result
    finally:
        for worker in workers:
            worker.stop()


def follow_until_all(name: str, bootstrap: str, group: str, names: list[str], n: int, expected: Callable[[], int],
                     pids: Sequence[int], launched: float, timeout: float, alive: Callable[[], bool],
                     checkpoints: Sequence[int] = ()) -> Result:
    """Like :func:`follow`, but the rate counts ingest events only (N / interval), and done also needs
    ``expected()`` (messages on the topics the workers write, ingest included) to reach about 2 N.

    CPU is summed over ``pids``, peak RSS is the largest ``VmHWM`` among them. For each of ``checkpoints`` (event
    counts), ``extra["rss_mb_at_<c>"]`` is the largest VmHWM at the first poll where ``n - lag`` (lag over all
    ``names``) reached c: a lower bound of the events that went through both stages (cleaned and windowed)."""
    deadline = time.monotonic() + timeout
    first_t = first_cpu = None
    first_left = 0
    last = -1
    marks: dict[str, float] = {}
    while time.monotonic() < deadline:
        if not alive():
            return Result(name, note=f"worker exited early (lag {last})")
        try:
            ingest_lag = committed_lag(bootstrap, group, names[:1])
            lag = committed_lag(bootstrap, group, names)
        except Exception:
            ingest_lag = lag = -1
        now, cpu = time.monotonic(), sum(proc_cpu(p) for p in pids)
        if lag >= 0:
            last = lag
            for c in checkpoints:
                if n - lag >= c and f"rss_mb_at_{c}" not in marks:
                    marks[f"rss_mb_at_{c}"] = max(proc_hwm_mb(p) for p in pids)
            if first_t is None and ingest_lag < n:
                first_t, first_cpu, first_left = now, cpu, ingest_lag
            if lag == 0 and ingest_lag == 0 and expected() >= 2 * n - n // 100:
                assert first_t is not None and first_cpu is not None
                result = Result(name, events=n, wall_s=now - launched, rss_mb=max(proc_hwm_mb(p) for p in pids),
                                cpu_total_per_m=cpu / n * 1e6)
                if now > first_t and first_left > 0:
                    result.rate = first_left / (now - first_t)
                    result.cpu_per_m = (cpu - first_cpu) / first_left * 1e6
                result.extra = {"first_commit_after_s": first_t - launched, "clean_events": expected() - n, **marks}
                return result
        time.sleep(POLL_SECONDS)
    result = Result(name, note=f"timed out after {timeout:.0f}s (lag {last})")
    result.extra = marks
    return result


def run_bare(args: argparse.Namespace, ns: str, bootstrap: str, n: int) -> Result:
    group = f"bench-bare-{uuid.uuid4().hex[:8]}"
    launched = time.monotonic()
    done = subprocess.run([sys.executable, str(BENCH_DIR / "bare_consumer.py"), "--bootstrap", bootstrap,
                           "--topic", topics.for_namespace(ns).ingest, "--group", group, "--events", str(n)],
                          capture_output=True, text=True, timeout=args.timeout, check=False)
    wall = time.monotonic() - launched
    if done.returncode != 0:
        return Result("bare aiokafka getmany + json.loads", note=f"failed: {done.stderr[-300:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    span = out["done"] - out["first"]
    return Result("bare aiokafka getmany + json.loads", events=out["count"], rate=out["count"] / span,
                  wall_s=wall, rss_mb=out["rss_hwm_kb"] / 1024,
                  cpu_per_m=(out["cpu_s"] - out["cpu_first_s"]) / out["count"] * 1e6,
                  cpu_total_per_m=out["cpu_s"] / out["count"] * 1e6,
                  note="first message -> Nth message, measured in-process")


def run_subprocess_app(args: argparse.Namespace, name: str, argv: list[str], ns: str, bootstrap: str, n: int,
                       tmp: Path, group: str, extra_topics: Callable[[list[str]], list[str]]) -> Result:
    ingest = topics.for_namespace(ns).ingest
    env = {**os.environ, "BENCH_GROUP": group, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": ingest,
           "BENCH_PARTITIONS": str(args.partitions), "BENCH_DATADIR": str(tmp / group),
           "BENCH_WEB_PORT": str(get_settings().worker_web_port + 1),
           "BENCH_GRACE_MS": str(grace_seconds(args) * 1000)}
    log = (tmp / f"{group}.log").open("ab")
    launched = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=BENCH_DIR)
    try:
        from kafka.admin import KafkaAdminClient

        def names() -> list[str]:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            try:
                return [ingest, *extra_topics(list(admin.list_topics()))]
            finally:
                admin.close()

        result = follow(name, bootstrap, group, lambda: [ingest], n, proc.pid, launched, args.timeout,
                        lambda: proc.poll() is None)
        # once ingest is all committed, wait for intermediate topics (Quix repartition) too; the rate counts
        # ingest events only
        more = [x for x in names() if x != ingest] if result.events else []
        if more:
            deadline = time.monotonic() + args.timeout
            while committed_lag(bootstrap, group, more) and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
            now = time.monotonic()
            cpu = proc_cpu(proc.pid)
            result.wall_s, result.rss_mb = now - launched, proc_hwm_mb(proc.pid)
            result.cpu_total_per_m = cpu / n * 1e6
            steady = result.extra.get("steady_events")
            if result.rate is not None and steady:
                result.rate = steady / (now - launched - result.extra["first_commit_after_s"])
                result.cpu_per_m = (cpu - (result.extra.get("first_cpu_s") or 0.0)) / steady * 1e6
            result.note = f"incl. repartition topic(s) {', '.join(more)}"
        return result
    finally:
        stop(proc)
        log.close()


@dataclass(frozen=True)
class QuixPeer:
    """A Quix Streams peer of bench/quix_app.py: ``--only`` name, job argument, label (its first word is the
    contender's key in table()), and whether it does our job (then its cell totals are checked)."""

    contender: str
    job: str
    label: str
    same_job: bool


QUIX_PEERS = (
    QuixPeer("quix", "partition", "quix (same job, no repartition: our clean(), dead letters, per-entity state and "
                                  "per-partition 1-min cells in one stateful apply, closed minutes per partition)",
             True),
    QuixPeer("quix-groupby", "groupby", "quix-groupby (same job: our clean(), dead letters, per-entity state, cell "
                                        "deltas, group_by cell, 1-min tumbling reduce)", True),
    QuixPeer("quix-light", "light", "quix-light (decode, validate, group_by channel, 1-min tumbling reduce)", False),
)


def run_quix(args: argparse.Namespace, python: str, peer: QuixPeer, ns: str, bootstrap: str, n: int, tmp: Path,
             group: str | None = None) -> Result:
    """One Quix peer; done once its group committed everything on ingest and on its repartition topic(s). A
    ``group`` given again resumes where it stopped, with its state (the state directory is named after it)."""
    group = group or f"bench-{peer.contender}-{uuid.uuid4().hex[:8]}"
    return run_subprocess_app(
        args, peer.label, [python, "-W", "ignore", str(BENCH_DIR / "quix_app.py"), peer.job], ns, bootstrap, n, tmp,
        group, lambda all_topics: [x for x in all_topics if x.startswith("repartition") and f"__{group}--" in x])


# ------------------------------------------------------------------------ cell totals of the same-job Quix peers
# the scalar fields of WindowAgg that the same-job peers emit per cell (quix_app.FIELDS, derived the same way)
CELL_FIELDS = tuple(f.name for f in fields(WindowAgg) if f.type == "int")
# the check input lies this much in the past: more than the longest grace + window, so that events at the
# current time close all of its windows
CHECK_SHIFT_MS = 6 * 3_600_000
Cells = dict[WindowKey, tuple[int, ...]]  # CELL_FIELDS per (dimension, value, window start), no all-zero cell


@dataclass
class QuixCheck:
    """The check input: on ``ns``'s ingest topic, ``inputs`` events of the bench input shifted CHECK_SHIFT_MS into
    the past; ``closers``, the closing events to produce once the peers processed those; ``cells`` the reference
    totals of the inputs, ``rejected`` how many of them clean() rejects."""

    ns: str
    inputs: int
    closers: list[tuple[bytes, bytes]]
    cells: Cells
    rejected: int


def shifted(value: bytes, shift_ms: int) -> bytes:
    """A raw submission (as generate() writes them: integer event time) with its event time moved by shift_ms."""
    raw = json.loads(value)
    return json.dumps({**raw, "event_time": raw["event_time"] + shift_ms}).encode()


def clean_all(messages: Sequence[tuple[bytes, bytes]], now_ms: int) -> tuple[list[tuple[dict[str, Any], Cleaned]], int]:
    """(raw submission, clean event) of every message clean() accepts at ``now_ms``, and how many it rejects."""
    accepted, rejected = [], 0
    tolerance_ms = get_settings().future_tolerance_seconds * 1000
    for _, value in messages:
        try:
            raw = parse_json_object(value)
            accepted.append((raw, clean(raw, now_ms, tolerance_ms)))
        except (Rejected, ValueError, TypeError):
            rejected += 1
    return accepted, rejected


def reference_cells(accepted: Sequence[tuple[dict[str, Any], Cleaned]]) -> Cells:
    """The cell totals of the clean events: :func:`domain.entities.batch_cells` with the worker's settings (the
    plain recomputation our worker's window state is tested against)."""
    s = get_settings()
    rules = CaseRules(s.sla_first_response_seconds, s.sla_resolution_seconds, s.max_duration_seconds * 1000)
    records = [(c.schema, c.record) for _, c in accepted]
    cells = batch_cells([r for schema, r in records if schema == "feedback_event"],
                        [r for schema, r in records if schema == "ticket_event"],
                        s.dimensions, s.window_seconds * 1000, rules)
    return {key: tuple(getattr(agg, f) for f in CELL_FIELDS) for key, agg in cells.items()}


def id_in_partition(prefix: str, partition: int, partitions: int) -> str:
    """The first ``<prefix>-<i>`` that produce() (murmur2, as Kafka's Java clients) puts in ``partition``."""
    from aiokafka.partitioner import DefaultPartitioner

    every, partitioner = list(range(partitions)), DefaultPartitioner()
    return next(name for i in itertools.count()
                if partitioner((name := f"{prefix}-{i}").encode(), every, every) == partition)


def closing_events(accepted: Sequence[tuple[dict[str, Any], Cleaned]], partitions: int,
                   now_ms: int) -> list[tuple[bytes, bytes]]:
    """Events at ``now_ms`` that close every window of ``accepted`` in both same-job peers: in every partition
    (the partition peer closes by its partition's newest event time), copies of accepted inputs whose cells
    name every (dimension, value) that any accepted input names (the groupby peer closes by cell key).
    Ratings are copied as new ratings, ticket events as new cases (``created``); every copy has a new id."""
    dimensions = get_settings().dimensions
    named: set[tuple[str, str]] = set()
    cover = []
    for raw, cleaned in accepted:
        if cleaned.schema == "feedback_event" and cleaned.record["satisfied"] is None:
            continue  # no cells
        pairs = {(d, v) for d, v, _ in cell_keys(cleaned.record, dimensions, 0)}
        if not pairs <= named:
            named |= pairs
            cover.append((raw, "rating_id" if cleaned.schema == "feedback_event" else "ticket_id"))
    out = []
    for partition in range(partitions):
        for i, (raw, id_field) in enumerate(cover):
            new_id = id_in_partition(f"close-{i}", partition, partitions)
            copy = {**raw, "event_id": new_id, id_field: new_id, "event_time": now_ms}
            if id_field == "ticket_id":
                copy["status"] = "created"
            out.append((new_id.encode(), json.dumps(copy).encode()))
    return out


def prepare_quix_check(args: argparse.Namespace, bootstrap: str, messages: Sequence[tuple[bytes, bytes]]
                       ) -> QuixCheck:
    """Produce the check input to a fresh namespace: ``messages`` with their event times CHECK_SHIFT_MS earlier;
    compute their reference cells and :func:`closing_events` (whose own windows stay open: not in the
    reference)."""
    now_ms = int(time.time() * 1000)
    inputs = [(key, shifted(value, -CHECK_SHIFT_MS)) for key, value in messages]
    accepted, rejected = clean_all(inputs, now_ms)
    ns = fresh_namespace(args.partitions, "benchcheck")
    produce(bootstrap, topics.for_namespace(ns).ingest, inputs)
    return QuixCheck(ns, len(inputs), closing_events(accepted, args.partitions, now_ms), reference_cells(accepted),
                     rejected)


def read_topic(bootstrap: str, name: str) -> list[Any]:
    """Every message value of topic ``name`` as JSON, from the beginning to the end offsets at the call."""
    return [json.loads(record.value) for record in read_records(bootstrap, name)]


def summed_cells(rows: Sequence[dict[str, Any]]) -> Cells:
    """What cell records add up to per (dimension, value, window start); all-zero sums left out."""
    sums: dict[WindowKey, list[int]] = {}
    for row in rows:
        cell = sums.setdefault((row["dimension"], row["dimension_value"], row["window_start"]), [0] * len(CELL_FIELDS))
        for i, f in enumerate(CELL_FIELDS):
            cell[i] += row[f]
    return {key: tuple(cell) for key, cell in sums.items() if any(cell)}


def check_quix(args: argparse.Namespace, python: str, peers: Sequence[QuixPeer], check: QuixCheck, bootstrap: str,
               tmp: Path) -> dict[QuixPeer, tuple[bool, str]]:
    """Run each peer on the check input in two steps with one consumer group (so one state directory): until the
    inputs are all committed, then, once every peer got there and the closing events were produced (behind the
    inputs in every partition), until those are committed too. Closing events processed earlier would close
    windows that other partitions still add to (the groupby peer closes windows per cell key, over deltas from
    every partition, and drops later ones as late). Returns per peer (its cells equal the reference, a note)."""
    groups = {peer: f"bench-check-{peer.contender}-{uuid.uuid4().hex[:8]}" for peer in peers}
    outcome: dict[QuixPeer, tuple[bool, str]] = {}
    for peer, group in groups.items():
        run = run_quix(args, python, peer, check.ns, bootstrap, check.inputs, tmp, group)
        if not run.events:
            outcome[peer] = (False, f"cell check: the run on its input failed ({run.note})")
    produce(bootstrap, topics.for_namespace(check.ns).ingest, check.closers)
    for peer, group in groups.items():
        if peer not in outcome:
            run = run_quix(args, python, peer, check.ns, bootstrap, len(check.closers), tmp, group)
            outcome[peer] = (compare_cells(bootstrap, peer, check) if run.events else
                             (False, f"cell check: the run on the closing events failed ({run.note})"))
    return outcome


def compare_cells(bootstrap: str, peer: QuixPeer, check: QuixCheck) -> tuple[bool, str]:
    """(the cell records ``peer`` emitted on the check namespace, summed, equal the reference; a note)."""
    rows = read_topic(bootstrap, f"{check.ns}.quix.{peer.job}.windows.v1")
    dead = len(read_topic(bootstrap, f"{check.ns}.quix.{peer.job}.deadletter.v1"))
    got = summed_cells(rows)
    differ = sorted(k for k in got.keys() | check.cells.keys() if got.get(k) != check.cells.get(k))
    letters = f"{dead:,} dead letters ({check.rejected:,} inputs rejected by clean())"
    if not differ:
        return True, f"cell check: = reference in all {len(got):,} cells ({len(rows):,} records summed), {letters}"
    first = differ[0]
    return False, (f"cell check: CELL TOTALS DIFFER in {len(differ):,} of {len(check.cells):,} reference cells, "
                   f"e.g. {first}: {got.get(first)} vs reference {check.cells.get(first)}; {letters}")


# ----------------------------------------------------------------------------------------------- output


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(results: list[Result], skipped: list[str]) -> str:
    by = {r.name.split(" ")[0]: r for r in results}
    ours = by.get("ours")

    def ratio(other: str) -> str:
        o = by.get(other)
        if ours is None or o is None or ours.rate is None or o.rate is None:
            return "—"
        return f"{ours.rate / o.rate:.3f}"

    lines = ["| contender | events | events/s (first commit → done) | events/s (N / wall) "
             "| wall s (launch → consumed) | peak RSS MB | CPU s / 1M (steady) "
             "| CPU s / 1M (incl. start-up) | note |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.events:,} | {fmt(r.rate, ',.0f')} | "
                     f"{fmt(r.events / r.wall_s if r.wall_s else None, ',.0f')} | {fmt(r.wall_s, '.1f')} | "
                     f"{fmt(r.rss_mb, '.0f')} | {fmt(r.cpu_per_m, '.1f')} | {fmt(r.cpu_total_per_m, '.1f')} "
                     f"| {r.note} |")
    lines += ["", "| ratio | value |", "|---|---:|", f"| ours / bare | {ratio('bare')} |",
              f"| ours / quix (same job, no repartition) | {ratio('quix')} |",
              f"| ours / quix-groupby (same job, repartition) | {ratio('quix-groupby')} |",
              f"| ours / quix-light | {ratio('quix-light')} |", f"| ours / naive-faust | {ratio('naive')} |"]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    return "\n".join(lines)


def machine() -> str:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 1024 / 1024:.1f} GiB RAM, {platform.platform()}, "
            f"Python {platform.python_version()}")


def quix_python(requested: str | None) -> str | None:
    """An interpreter that can import quixstreams: --quix-python, $SATPULSE_BENCH_QUIX_PYTHON, this venv,
    or bench/.venv-quix."""
    candidates = [requested, os.environ.get("SATPULSE_BENCH_QUIX_PYTHON"), sys.executable,
                  str(BENCH_DIR / ".venv-quix" / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists() and subprocess.run(
                [python, "-W", "ignore", "-c", "import quixstreams"], capture_output=True, check=False
        ).returncode == 0:
            return python
    return None


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary directory for logs and chDB, removed afterwards unless ``SATPULSE_BENCH_KEEP_TMP`` is set."""
    tmp = Path(tempfile.mkdtemp(prefix="satpulse-bench-"))
    try:
        yield tmp
    finally:
        if os.environ.get("SATPULSE_BENCH_KEEP_TMP"):
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def update_results(path: Path, title: str | None, body: str) -> None:
    """Write ``body`` into the results file: ``title=None`` replaces the head (everything before the first
    ``## `` heading: the throughput table); otherwise the section ``## <title>`` is replaced, or appended."""
    text = path.read_text() if path.exists() else ""
    head, _, rest = text.partition("\n## ")
    if text.startswith("## "):
        head, rest = "", text[3:]
    sections = [f"## {chunk}" for chunk in rest.split("\n## ")] if rest else []
    if title is None:
        head = body.rstrip("\n")
    else:
        section = f"## {title}\n\n{body.rstrip()}"
        found = [i for i, x in enumerate(sections) if x.splitlines()[0] == f"## {title}"]
        if found:
            sections[found[0]] = section
        else:
            sections.append(section)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(x.rstrip("\n") for x in [head, *sections] if x) + "\n")


def quix_check_details(check: QuixCheck | None) -> list[str]:
    """The results' line on the cell check of the same-job Quix peers (none without a check)."""
    if check is None:
        return []
    return [f"- cell check of the same-job Quix peers (in the note of their rows): after the timed runs, each ran "
            f"again on a copy of the first {check.inputs:,} input events shifted {CHECK_SHIFT_MS // 3_600_000} h into "
            f"the past, then (same consumer group and state, restarted) on {len(check.closers)} events at the current "
            f"time produced behind them in every partition, which close all their windows; the cell records each "
            f"emitted, summed per (dimension, value, minute) over records and partitions, were compared with "
            f"`domain.entities.batch_cells` over `clean()` of that input (the plain recomputation our worker's "
            f"window state is tested against)"]


def run_throughput(args: argparse.Namespace, command: str) -> int:
    """The throughput table: N events produced once, each contender one after the other on that topic."""
    only = set(args.only.split(","))
    bootstrap = get_settings().kafka_bootstrap
    ns = fresh_namespace(args.partitions)
    t = topics.for_namespace(ns)
    n = args.events
    started = time.monotonic()
    messages = generate(n, hours=args.input_hours)
    gen_s = time.monotonic() - started
    prod_s = produce(bootstrap, t.ingest, messages)
    print(f"namespace {ns}: generated {n:,} events in {gen_s:.1f}s, produced to {t.ingest} "
          f"({args.partitions} partitions) in {prod_s:.1f}s", flush=True)
    quix = [peer for peer in QUIX_PEERS if peer.contender in only]
    python = quix_python(args.quix_python) if quix else None
    check = None
    if python is not None and args.quix_check_events != 0 and any(peer.same_job for peer in quix):
        check = prepare_quix_check(args, bootstrap, messages[:args.quix_check_events])
        print(f"Quix cell check input: {check.inputs:,} events on {topics.for_namespace(check.ns).ingest}", flush=True)
    del messages

    results: list[Result] = []
    skipped: list[str] = []
    with scratch_dir() as tmp:
        if "ours" in only:
            print("running ours ...", flush=True)
            results.append(run_ours(args, ns, bootstrap, n, tmp))
        if "bare" in only:
            print("running bare consumer ...", flush=True)
            results.append(run_bare(args, ns, bootstrap, n))
        if "naive" in only:
            print("running naive Faust ...", flush=True)
            group = f"bench-naive-{uuid.uuid4().hex[:8]}"
            results.append(run_subprocess_app(
                args, "naive Faust (per-event async for + tumbling table)",
                [sys.executable, str(BENCH_DIR / "naive_faust.py"), "worker", "-l", "warn"],
                ns, bootstrap, n, tmp, group, lambda _: []))
        if quix and python is None:
            skipped.append("Quix Streams: quixstreams not importable (pip install quixstreams, see README)")
        elif python is not None:
            timed = {}
            for peer in quix:
                print(f"running Quix Streams, {peer.contender} ({python}) ...", flush=True)
                timed[peer] = run_quix(args, python, peer, ns, bootstrap, n, tmp)
            if check is not None:
                print("checking the cell totals of the same-job Quix peers ...", flush=True)
                same_job = [peer for peer in quix if peer.same_job]
                for peer, (equal, note) in check_quix(args, python, same_job, check, bootstrap, tmp).items():
                    timed[peer].note = f"{timed[peer].note}; {note}" if timed[peer].note else note
                    timed[peer].extra["cells_equal"] = float(equal)
            results += timed.values()

    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    details = [
        f"- machine: {machine()}",
        f"- input: {n:,} raw submissions (~80 % feedback, ~20 % ticket events) on `{t.ingest}`, "
        f"{args.partitions} partitions, local single-node Kafka on the same machine; "
        + ("shuffled over 4 h of event time, windows open for 5 h (grace) in every windowing contender"
           if args.input_hours is None else
           f"in event-time order over {args.input_hours:g} h, default grace ({grace_seconds(args)} s)"),
        "- contenders run one after the other on the same topic, each with a fresh consumer group; "
        "Kafka shares the CPUs with them, so expect noise of +/-10-20 % between runs", *quix_check_details(check),
        "", table(results, skipped), ""]
    if args.input_hours is None:  # the head of the results file
        report = "\n".join([f"# Benchmark results ({when})", "", f"- command: `{command}`", *details])
        update_results(args.output, None, report)
    else:
        report = "\n".join([f"- {when}, command: `{command}`", *details])
        update_results(args.output, "Throughput, input in event-time order", report)
    print(report)
    print(f"written to {args.output}")
    return 0 if all(r.rate is not None and r.extra.get("cells_equal", 1.0) for r in results) else 1


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="throughput",
                        help="comma-separated: throughput (default), latency, scaling, memory (bench/README.md)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--input-hours", type=float, default=None,
                        help="throughput input in event-time order over this many hours, default grace "
                             "(default: shuffled, 5 h grace)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0, help="per contender / run, seconds")
    parser.add_argument("--only", default="ours,bare,naive,quix,quix-groupby,quix-light",
                        help="comma-separated contenders: ours, bare, naive, quix (same job, no repartition), "
                             "quix-groupby (same job, repartition), quix-light")
    parser.add_argument("--quix-python", default=None, help="interpreter with quixstreams installed")
    parser.add_argument("--quix-check-events", type=int, default=None,
                        help="check the cell totals of the same-job Quix peers on this many events of the input "
                             "(default: all; 0: no check)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "latest.md")
    lat = parser.add_argument_group("latency mode")
    lat.add_argument("--latency-rate", type=int_list, default=[10_000], help="offered events/s, comma-separated")
    lat.add_argument("--latency-seconds", type=float, default=60.0, help="offered-load duration per run")
    lat.add_argument("--latency-warmup", type=float, default=10.0, help="first seconds of events left out")
    lat.add_argument("--latency-drain", type=float, default=60.0,
                     help="max seconds after the load stops to wait for the last windows")
    lat.add_argument("--latency-publish-intervals", type=float_list, default=[1.0, 0.25],
                     help="SATPULSE_PUBLISH_INTERVAL_SECONDS values, comma-separated")
    lat.add_argument("--latency-engine", choices=("chdb", "server"), default="chdb",
                     help="the worker's ClickHouse: embedded chDB or the local ClickHouse server")
    sca = parser.add_argument_group("scaling mode")
    sca.add_argument("--scaling-events", type=int, default=100_000)
    sca.add_argument("--scaling-partitions", type=int_list, default=[1, 2, 4])
    sca.add_argument("--scaling-workers", type=int_list, default=[1, 2])
    mem = parser.add_argument_group("memory mode")
    mem.add_argument("--memory-cases", type=int_list, default=[250_000, 500_000, 1_000_000],
                     help="open-case checkpoints; the largest is the number of cases generated")
    mem.add_argument("--memory-stream", type=int_list, default=[1_200_000, 2_400_000, 3_600_000, 4_800_000],
                     help="steady-stream checkpoints; the largest is the number of events generated ('' = skip)")
    mem.add_argument("--memory-stream-hours", type=float, default=48.0,
                     help="hours of event time the steady stream spans")
    mem.add_argument("--memory-mix", type=int_list, default=[],
                     help="shuffled-mix checkpoints (the throughput input; default: skipped)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    modes = args.modes.split(",")
    unknown = set(modes) - {"throughput", "latency", "scaling", "memory"}
    if unknown:
        raise SystemExit(f"unknown mode(s): {', '.join(sorted(unknown))}")
    needed = ["kafka", "clickhouse"] if "scaling" in modes or args.latency_engine == "server" else ["kafka"]
    print(f"starting {' and '.join(needed)} ({get_settings().kafka_bootstrap}) ...", flush=True)
    services.ensure_up(needed)
    status = 0
    if "throughput" in modes:
        status |= run_throughput(args, command)
    if "latency" in modes:
        import latency

        status |= latency.main(args, command)
    if "scaling" in modes:
        import scaling

        status |= scaling.main(args, command)
    if "memory" in modes:
        import memory

        status |= memory.main(args, command)
    return status


if __name__ == "__main__":
    sys.exit(main())
