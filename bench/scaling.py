"""Scaling of our worker over partitions and worker processes (issue 7); ``bench/run.py --modes scaling``.

For every (P partitions, W workers) cell: a fresh namespace with P partitions per topic, the same N raw
submissions as the throughput table (``run.generate``, produced once per cell), and W ``satpulse worker``
processes with the same worker id (one consumer group: they share the partitions), all writing to a fresh
database on the local ClickHouse SERVER (chDB allows one process per data directory, so every cell uses the
server, also the 1-worker ones). The workers are started and their group is stable BEFORE the input is produced
(no partition changes hands during the run); then the input is produced and followed like "ours" in the
throughput table (``run.follow_until_all``) until everything is consumed. events/s = N / (start of production
-> everything consumed); CPU s / 1M = CPU of all W processes over that interval / N; peak RSS of the largest.
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from run import (
    Result,
    fmt,
    follow_workers,
    fresh_namespace,
    generate,
    machine,
    pids_of,
    proc_cpu,
    produce,
    scratch_dir,
    start_workers,
    update_results,
    worker_env,
)

from devtools.worker_process import WorkerProcess, metric_sum
from satpulse import topics
from satpulse.settings import get_settings


def cleaned_per_worker(workers: list[WorkerProcess]) -> str:
    """Events each worker's clean stage took in (from its /metrics), e.g. "60,000 + 40,000"."""
    counts = []
    for worker in workers:
        try:
            counts.append(f"{metric_sum(worker.scrape(), 'satpulse_events_in_total', stage='cleaner'):,.0f}")
        except OSError:
            counts.append("?")
    return " + ".join(counts)


def wait_group(bootstrap: str, group: str, members: int, timeout: float = 120.0) -> None:
    """Block until consumer group ``group`` is Stable with ``members`` members. Raises TimeoutError."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = admin.describe_groups([group]).get(group) or {}
            if info.get("group_state") == "Stable" and len(info.get("members") or ()) == members:
                return
            time.sleep(0.5)
    finally:
        admin.close()
    raise TimeoutError(f"group {group} not stable with {members} members after {timeout:.0f}s")


def run_cell(args: argparse.Namespace, partitions: int, count: int, messages: list[tuple[bytes, bytes]],
             tmp: Path) -> Result:
    """One cell: start ``count`` workers of one group on a fresh namespace with ``partitions`` partitions, wait
    until the group is stable with all of them, then produce ``messages`` and follow until all is consumed.

    The workers join before the input exists so that no partition changes hands mid-run (a worker taking over
    a partition another one processed currently stalls: see bench/README.md). They consume while the input is
    produced, so the rate is counted from the start of production, and CPU from there (they idle before)."""
    settings = get_settings()
    bootstrap = settings.kafka_bootstrap
    ns = fresh_namespace(partitions, "scale")
    worker_id = f"bench-scale-{uuid.uuid4().hex[:8]}"
    url = f"clickhouse://default:@127.0.0.1:{settings.clickhouse_native_port}/{ns}"
    workers = start_workers(worker_env(ns, worker_id, partitions, url), count, tmp, ns)
    try:
        wait_group(bootstrap, worker_id, count)
        pids = pids_of(workers)
        cpu0, started = sum(proc_cpu(p) for p in pids), time.monotonic()
        produce_s = produce(bootstrap, topics.for_namespace(ns).ingest, messages)
        result = follow_workers(f"{partitions} partition(s) x {count} worker(s)", bootstrap, ns, worker_id,
                                workers, len(messages), started, args.timeout)
        if result.wall_s is not None and result.cpu_total_per_m is not None:
            result.rate = result.events / result.wall_s
            result.cpu_per_m = result.cpu_total_per_m - cpu0 / result.events * 1e6
        result.note = f"produced in {produce_s:.1f}s; ingest events cleaned per worker: {cleaned_per_worker(workers)}"
        return result
    finally:
        for worker in workers:
            worker.stop()


def table(results: list[Result]) -> str:
    lines = ["| partitions x workers | events | events/s (produce start → all consumed) | CPU s / 1M (all workers) "
             "| CPU s / 1M (incl. start-up) | peak RSS MB (largest worker) | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.events:,} | {fmt(r.rate, ',.0f')} | {fmt(r.cpu_per_m, '.1f')} "
                     f"| {fmt(r.cpu_total_per_m, '.1f')} | {fmt(r.rss_mb, '.0f')} | {r.note} |")
    return "\n".join(lines)


def main(args: argparse.Namespace, command: str) -> int:
    """Every cell one after the other; writes the section "Scaling"."""
    messages = generate(args.scaling_events)
    results = []
    with scratch_dir() as tmp:
        for partitions in args.scaling_partitions:
            for count in args.scaling_workers:
                print(f"scaling: {partitions} partition(s) x {count} worker(s) ...", flush=True)
                results.append(run_cell(args, partitions, count, messages, tmp))
                print(table(results[-1:]), flush=True)
    body = "\n".join([
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, command: `{command}`", f"- machine: {machine()}",
        f"- input: {args.scaling_events:,} raw submissions (same mix as the throughput table), produced once per "
        "cell to a fresh namespace; workers share one consumer group and write to a fresh database on the local "
        "ClickHouse server (not chDB)",
        "- the machine has 2 cores shared by the workers, Kafka and ClickHouse: a second worker can at best use "
        "what the first leaves idle; CPU s / 1M is the steadier figure", "", table(results)])
    update_results(args.output, "Scaling over partitions and worker processes", body)
    print(f"written to {args.output}")
    return 0 if all(r.rate is not None for r in results) else 1
