"""End-to-end latency of our worker at a fixed offered load (issue 7); ``bench/run.py --modes latency``.

For each offered rate R and publish interval: a fresh namespace, ONE ``satpulse worker`` (chDB, default grace),
and a producer process (``python bench/latency.py produce ...``) that offers live traffic at a steady R events/s
for ``--latency-seconds``: every 10 ms it sends the events due by then (R x elapsed - sent so far), each with
``event_time`` = the wall clock at that moment (ms), 4 feedback events from ``devtools.sample.sample_submissions``
(unique event ids) to 1 ticket lifecycle event from ``sample_ticket_events`` (each case's steps in order).

Definition (bench/README.md): the k-th rated feedback event produced into window W is visible when the first
record for W, dimension ``all``, on the metrics topic has ``rated >= k``; its latency is that record's arrival
time at a consumer in the harness minus the event's produce time (the same wall-clock instant as its
``event_time``). p50/p99/max are over every feedback event produced after the warm-up; an event never seen
counts as infinitely late (its percentile is printed as "> drain").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from adapters.emit import key_of  # noqa: E402
from devtools.sample import sample_submissions, sample_ticket_events  # noqa: E402
from satpulse import codec, topics  # noqa: E402

TICK_SECONDS = 0.01  # the producer's pacing step
LAG_POLL_SECONDS = 2.0  # how often the harness samples the worker's committed ingest lag
TOPIC_WAIT_SECONDS = 30.0  # how long the metrics collector waits for the broker to know the metrics topic
KEEP_UP_SECONDS = 10.0  # "keeps up": everything visible within this after the load stops, ...
KEEP_UP_LAG_SECONDS = 5.0  # ... and the ingest lag in the last quarter of the load stayed under R x this


# ----------------------------------------------------------------------------------------------- producer


def event_stream(cases: int, seed: int = 11) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """Endless (kind, key, raw event without event_time): 4 feedback events, then 1 ticket event, repeated.

    Feedback shapes cycle through 5,000 ``sample_submissions`` with a unique ``event_id`` each; ticket events
    are ``cases`` lifecycles from ``sample_ticket_events``, emitted in the order of their sampled event times
    (so each case is created before it is answered and resolved), repeated with fresh ids when exhausted."""
    shapes = list(sample_submissions(5_000, 0, 1, seed))
    lifecycle = sorted(sample_ticket_events(cases, 0, 3_600_000, seed), key=lambda e: e["event_time"])
    tickets = ({**e, "ticket_id": f"{e['ticket_id']}-{rep}", "event_id": f"{e['event_id']}-{rep}"}
               for rep in itertools.count() for e in lifecycle)
    for i in itertools.count():
        if i % 5 == 4:
            ticket = next(tickets)
            yield "ticket", key_of(ticket) or b"", ticket
        else:
            event = {**shapes[i % len(shapes)], "event_id": f"lat-{seed}-{i}"}
            yield "feedback", key_of(event) or b"", event


async def produce_steady(bootstrap: str, topic: str, rate: int, seconds: float, window_ms: int) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds`` (aiokafka, acks=1, one record batch per partition per tick).

    Returns start/end (time.time()), events sent, its CPU seconds over the load, the largest number of events
    sent in one tick (a sign of the producer falling behind its schedule), and the produce times of the
    feedback events per window start."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner
    from run import send_records

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0, max_batch_size=1024 * 1024)
    await producer.start()
    partitioner = DefaultPartitioner()
    partitions = sorted(await producer.partitions_for(topic))
    events = event_stream(max(100, int(rate * seconds * 0.2 / 3.2) + 1))
    feedback: dict[int, list[float]] = defaultdict(list)
    pending: list[asyncio.Future[Any]] = []
    sent = max_tick = 0
    start, cpu0 = time.time(), time.process_time()
    try:
        while (now := time.time()) < start + seconds:
            due = int((now - start) * rate)
            max_tick = max(max_tick, due - sent)
            by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
            now_ms = int(now * 1000)
            for kind, key, event in itertools.islice(events, due - sent):
                if kind == "feedback":
                    feedback[now_ms // window_ms * window_ms].append(now)
                value = json.dumps({**event, "event_time": now_ms}).encode()
                by_partition[partitioner(key, partitions, partitions)].append((key, value))
            sent = due
            for partition, records in by_partition.items():
                pending += await send_records(producer, topic, partition, records)
            for future in pending:
                if future.done():
                    future.result()  # raises if a delivery failed
            pending = [f for f in pending if not f.done()]
            await asyncio.sleep(max(0.0, TICK_SECONDS - (time.time() - now)))
        end = time.time()
        await asyncio.gather(*pending)
        acked = time.time()
    finally:
        await producer.stop()
    return {"start": start, "end": end, "acked": acked, "sent": sent, "max_tick_events": max_tick,
            "cpu_s": time.process_time() - cpu0, "feedback": {str(k): v for k, v in feedback.items()}}


def producer_main(argv: list[str]) -> int:
    """``latency.py produce --bootstrap B --topic T --rate R --seconds S --window-ms W --out FILE``."""
    parser = argparse.ArgumentParser()
    for name in ("--bootstrap", "--topic", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--window-ms", type=int, default=60_000)
    a = parser.parse_args(argv)
    result = asyncio.run(produce_steady(a.bootstrap, a.topic, a.rate, a.seconds, a.window_ms))
    Path(a.out).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------- metrics topic


@dataclass(frozen=True, slots=True)
class Seen:
    """One ``all`` window result as the harness's consumer received it."""

    arrival: float  # time.time() when poll() returned it
    emitted: float  # its emitted_at, seconds
    window_start: int
    rated: int


class MetricsCollector(threading.Thread):
    """Reads the metrics topic from the beginning (no group) and keeps every ``dimension == "all"`` record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest", fetch_max_wait_ms=10)
        try:
            consumer.assign([TopicPartition(self.topic, p) for p in self._partitions(consumer)])
            while not self.stopping.is_set():
                batches = consumer.poll(timeout_ms=50)
                arrival = time.time()
                for records in batches.values():
                    for r in records:
                        m = codec.decode(r.value, codec.WINDOW_METRIC)[1]
                        if m["dimension"] == "all":
                            self.seen.append(Seen(arrival, m["emitted_at"] / 1000, m["window_start"], m["rated"]))
        except BaseException as exc:  # reported by the harness
            self.error = exc
        finally:
            consumer.close()

    def _partitions(self, consumer: Any) -> set[int]:
        """The topic's partitions, waiting while the broker does not know them yet (a topic created a moment ago
        on a broker that just started: assigning nothing then saw no record at all). Raises TimeoutError."""
        deadline = time.monotonic() + TOPIC_WAIT_SECONDS
        while not (partitions := consumer.partitions_for_topic(self.topic)):
            if time.monotonic() > deadline or self.stopping.is_set():
                raise TimeoutError(f"{self.topic} has no partitions after {TOPIC_WAIT_SECONDS} s")
            time.sleep(0.2)
        return set(partitions)

    def visible(self) -> dict[int, int]:
        """Largest ``rated`` seen so far per window start."""
        best: dict[int, int] = {}
        for s in list(self.seen):
            best[s.window_start] = max(best.get(s.window_start, 0), s.rated)
        return best


def latencies(produced: dict[int, list[float]], seen: list[Seen], after: float,
              clock: str = "arrival") -> tuple[list[float], int]:
    """(latencies in s of the visible events, count of events never seen), over feedback events produced at or
    after ``after``. The k-th event of window W is visible at the first record of W with rated >= k;
    ``clock`` is ``arrival`` (harness receive time) or ``emitted`` (the record's emitted_at)."""
    by_window: dict[int, list[Seen]] = defaultdict(list)
    for s in seen:
        by_window[s.window_start].append(s)
    found: list[float] = []
    missing = 0
    for window, times in produced.items():
        shown = 0
        for s in sorted(by_window.get(window, []), key=lambda x: x.arrival):
            at = s.arrival if clock == "arrival" else s.emitted
            found += [at - t for t in times[shown:min(s.rated, len(times))] if t >= after]
            shown = max(shown, min(s.rated, len(times)))
        missing += sum(1 for t in times[shown:] if t >= after)
    return found, missing


def percentile(values: list[float], missing: int, q: float) -> float:
    """Nearest-rank percentile of ``values`` plus ``missing`` infinitely late ones (then ``inf``)."""
    total = len(values) + missing
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(q * total))
    return sorted(values)[rank - 1] if rank <= len(values) else math.inf


# ----------------------------------------------------------------------------------------------- one run


@dataclass
class LatencyRun:
    rate: int
    interval: float
    achieved: float = 0.0
    sent: int = 0
    measured: int = 0
    missing: int = 0
    p50: float = math.nan
    p99: float = math.nan
    worst: float = math.nan
    p50_emitted: float = math.nan
    p99_emitted: float = math.nan
    max_tick_events: int = 0
    producer_cpu_percent: float = math.nan
    lag: list[tuple[float, int]] = field(default_factory=list)  # (seconds since load start, ingest lag)
    worker_cpu_percent: float = math.nan
    worker_rss_mb: float = math.nan
    keeps_up: bool = False
    writes: str = "—"  # the window stage's ClickHouse writes (from the worker's /metrics)
    note: str = ""


def sample_lag(bootstrap: str, group: str, ingest: str, since: float, run: LatencyRun) -> None:
    from devtools.worker_process import committed_lag

    with contextlib.suppress(Exception):  # the group may not have committed yet
        run.lag.append((time.time() - since, committed_lag(bootstrap, group, [ingest])))


def window_writes(worker: Any) -> str:
    """ClickHouse writes of the window stage over the whole run, from the worker's /metrics: how many (one per
    window batch), mean rows (cells + events) and mean seconds per write."""
    from devtools.worker_process import metric_sum

    try:
        samples = worker.scrape()
    except OSError:
        return "—"
    count = metric_sum(samples, "satpulse_sink_flush_seconds_count", sink="clickhouse")
    if not count:
        return "0"
    rows = metric_sum(samples, "satpulse_sink_batch_rows_sum", sink="clickhouse") / count
    spent = metric_sum(samples, "satpulse_sink_flush_seconds_sum", sink="clickhouse") / count
    return f"{count:,.0f} x {rows:,.0f} rows, {spent:.2f} s"


def wait_visible(collector: MetricsCollector, produced: dict[int, list[float]], deadline: float,
                 on_poll: Any) -> bool:
    """Until every produced feedback event is visible (True) or ``deadline`` (False)."""
    while time.time() < deadline:
        best = collector.visible()
        if all(best.get(w, 0) >= len(times) for w, times in produced.items()):
            return True
        on_poll()
        time.sleep(0.5)
    return False


def run_one(args: argparse.Namespace, rate: int, interval: float, tmp: Path) -> LatencyRun:
    """One worker on a fresh namespace, the producer at ``rate`` for ``--latency-seconds``, then drain."""
    from run import fresh_namespace, proc_cpu, proc_hwm_mb, start_workers, worker_env

    from satpulse.settings import get_settings

    settings = get_settings()
    bootstrap = settings.kafka_bootstrap
    ns = fresh_namespace(args.partitions, "lat")
    t = topics.for_namespace(ns)
    worker_id = f"bench-latency-{uuid.uuid4().hex[:8]}"
    url = (f"clickhouse://default:@127.0.0.1:{settings.clickhouse_native_port}/{ns}"
           if args.latency_engine == "server" else f"chdb://{tmp / ns}")
    env = worker_env(ns, worker_id, args.partitions, url, grace_seconds=None,
                     SATPULSE_PUBLISH_INTERVAL_SECONDS=str(interval))
    run = LatencyRun(rate, interval)
    workers = start_workers(env, 1, tmp, f"latency-{ns}")
    collector = MetricsCollector(bootstrap, t.metrics)
    collector.start()
    pid = workers[0].proc.pid if workers[0].proc else 0
    try:
        time.sleep(5)  # let the worker join its group and get its partitions (covered by the warm-up anyway)
        out = tmp / f"{ns}-producer.json"
        cpu0, started = proc_cpu(pid), time.time()
        producer = subprocess.Popen([sys.executable, __file__, "produce", "--bootstrap", bootstrap, "--topic",
                                     t.ingest, "--rate", str(rate), "--seconds", str(args.latency_seconds),
                                     "--window-ms", str(settings.window_seconds * 1000), "--out", str(out)])
        while producer.poll() is None:
            sample_lag(bootstrap, worker_id, t.ingest, started, run)
            time.sleep(LAG_POLL_SECONDS)
        if producer.returncode != 0:
            run.note = f"producer failed ({producer.returncode})"
            return run
        result = json.loads(out.read_text())
        produced = {int(k): v for k, v in result["feedback"].items()}
        load_end = result["end"]
        run.worker_cpu_percent = 100 * (proc_cpu(pid) - cpu0) / (time.time() - started)
        visible_in_time = wait_visible(collector, produced, load_end + KEEP_UP_SECONDS,
                                       lambda: sample_lag(bootstrap, worker_id, t.ingest, started, run))
        if not visible_in_time:
            wait_visible(collector, produced, load_end + args.latency_drain,
                         lambda: sample_lag(bootstrap, worker_id, t.ingest, started, run))
        run.worker_rss_mb = proc_hwm_mb(pid)
        run.writes = window_writes(workers[0])
        summarise(run, result, produced, collector.seen, visible_in_time, args.latency_warmup)
        if collector.error is not None:
            run.note += f" metrics consumer failed: {collector.error!r}"
        return run
    finally:
        collector.stopping.set()
        collector.join(10)
        for worker in workers:
            worker.stop()


def summarise(run: LatencyRun, result: dict[str, Any], produced: dict[int, list[float]], seen: list[Seen],
              visible_in_time: bool, warmup: float) -> None:
    """Fill the run's figures from the producer's result and the records seen on the metrics topic."""
    run.sent = result["sent"]
    run.achieved = result["sent"] / (result["end"] - result["start"])
    run.max_tick_events = result["max_tick_events"]
    run.producer_cpu_percent = 100 * result["cpu_s"] / (result["end"] - result["start"])
    after = result["start"] + warmup
    found, run.missing = latencies(produced, seen, after)
    run.measured = len(found) + run.missing
    run.p50, run.p99 = percentile(found, run.missing, 0.5), percentile(found, run.missing, 0.99)
    run.worst = math.inf if run.missing else max(found, default=math.nan)
    by_emit, missing = latencies(produced, seen, after, clock="emitted")
    run.p50_emitted, run.p99_emitted = percentile(by_emit, missing, 0.5), percentile(by_emit, missing, 0.99)
    load = result["end"] - result["start"]
    late_lags = [lag for at, lag in run.lag if at >= 0.75 * load and at <= load]
    run.keeps_up = visible_in_time and bool(late_lags) and max(late_lags) <= run.rate * KEEP_UP_LAG_SECONDS


# ----------------------------------------------------------------------------------------------- report


def seconds(value: float, drain: float) -> str:
    if math.isinf(value):
        return f"> {drain:.0f} (not visible)"
    return "—" if math.isnan(value) else f"{value:.2f}"


def lag_summary(run: LatencyRun) -> str:
    """Ingest lag (messages) at about 25/50/75/100 % of the load and the last sample."""
    if not run.lag:
        return "—"
    load = run.sent / run.achieved if run.achieved else 0.0
    marks = []
    for q in (0.25, 0.5, 0.75, 1.0):
        before = [lag for at, lag in run.lag if at <= q * load]
        marks.append(f"{before[-1]:,}" if before else "—")
    return " / ".join(marks) + f" → {run.lag[-1][1]:,} at +{run.lag[-1][0]:.0f}s"


def table(runs: list[LatencyRun], drain: float) -> str:
    lines = ["| offered ev/s | publish interval s | achieved ev/s | feedback events measured | not visible "
             "| p50 s | p99 s | max s | p50 / p99 s by emitted_at | ingest lag 25/50/75/100 % of load → last "
             "| worker CPU % | worker peak RSS MB | ClickHouse writes x mean rows, mean s | keeps up | note |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r.rate:,} | {r.interval:g} | {r.achieved:,.0f} | {r.measured:,} | {r.missing:,} "
            f"| {seconds(r.p50, drain)} | {seconds(r.p99, drain)} | {seconds(r.worst, drain)} "
            f"| {seconds(r.p50_emitted, drain)} / {seconds(r.p99_emitted, drain)} | {lag_summary(r)} "
            f"| {r.worker_cpu_percent:.0f} | {r.worker_rss_mb:.0f} | {r.writes} | {'yes' if r.keeps_up else 'no'} "
            f"| producer CPU {r.producer_cpu_percent:.0f} %, max {r.max_tick_events:,} events in one 10 ms tick. "
            f"{r.note} |")
    return "\n".join(lines)


def main(args: argparse.Namespace, command: str) -> int:
    """Every (rate, publish interval) pair, one after the other; writes the section "Latency"."""
    from run import machine, scratch_dir, update_results

    runs = []
    with scratch_dir() as tmp:
        for rate in args.latency_rate:
            for interval in args.latency_publish_intervals:
                print(f"latency: {rate:,} events/s, publish interval {interval:g}s ...", flush=True)
                runs.append(run_one(args, rate, interval, tmp))
                print(table(runs[-1:], args.latency_drain), flush=True)
    body = "\n".join([
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, command: `{command}`", f"- machine: {machine()}",
        f"- one `satpulse worker` ({'ClickHouse server' if args.latency_engine == 'server' else 'chDB'}, default "
        f"grace 10 s, {args.partitions} partitions) per row, fresh "
        f"namespace; producer process on the same machine offers the load for {args.latency_seconds:g} s "
        f"(4 feedback : 1 ticket event, event_time = now); first {args.latency_warmup:g} s of events left out",
        "- latency of the k-th rated feedback event of window W = arrival (at the harness's consumer) of the "
        "first `all` record of W on the metrics topic with rated >= k, minus the event's produce time; events "
        f"not visible {args.latency_drain:g} s after the load stopped count as infinitely late",
        f"- keeps up = every event visible within {KEEP_UP_SECONDS:g} s of the end of the load and ingest lag in "
        f"the last quarter of the load <= {KEEP_UP_LAG_SECONDS:g} s of input; the producer, Kafka and the "
        "worker share 2 cores: noisy", "", table(runs, args.latency_drain)])
    update_results(args.output, "Latency at a fixed offered load", body)
    print(f"written to {args.output}")
    return 0 if all(r.achieved for r in runs) else 1


if __name__ == "__main__" and sys.argv[1:2] == ["produce"]:
    sys.exit(producer_main(sys.argv[2:]))
