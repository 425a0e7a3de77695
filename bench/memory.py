"""Memory of our worker as its input grows (issue 7); ``bench/run.py --modes memory``.

Runs of ONE ``satpulse worker`` (chDB, ``--partitions`` partitions), each on a fresh namespace, each followed
exactly like "ours" in the throughput table (``run.follow_until_all``):

1. open cases: ``max(--memory-cases)`` ticket ``created`` events of distinct cases that are never answered or
   resolved (the raw ingest shape of ``devtools.sample.sample_ticket_events``, created within the last hour,
   shuffled; the throughput table's 5 h grace, so none is late);
2. a steady stream: ``max(--memory-stream)`` events of ``run.generate(n, hours=--memory-stream-hours)``: the
   throughput table's mix in event-time order over that many hours, default grace (windows close and leave
   memory as in production; ratings and cases stay until ``entity_cache_per_partition`` is full);
3. optional, ``--memory-mix``: the throughput input itself (shuffled over 4 h of event time, 5 h grace). Its
   memory grows with N for as long as the run lasts, by construction: no window closes, every case's lifecycle
   arrives piecemeal (its contribution grows as more of it arrives) and cases stay until the cache is full.

Peak RSS is the worker's ``VmHWM``; at each checkpoint c it is read at the first poll where at least c events
went through both stages (``n - lag`` over the ingest topic: the worker counts an event in the batch that
cleaned it), so the checkpoints of one run show how
the high-water mark grows with the events processed (not separate runs per size).
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from run import (
    GRACE_SECONDS,
    Result,
    follow_workers,
    fresh_namespace,
    generate,
    machine,
    proc_hwm_mb,
    produce,
    scratch_dir,
    start_workers,
    update_results,
    worker_env,
)

from devtools.sample import sample_ticket_events
from satpulse import topics
from satpulse.settings import get_settings

CHUNK_CASES = 10_000


def open_cases(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` raw ticket ``created`` events of distinct cases (key = ticket id), created in the last hour.

    Taken chunk by chunk from ``sample_ticket_events`` (each chunk its own seed, so ids never repeat), keeping
    only the creation: the cases stay open."""
    import json

    now_ms = int(time.time() * 1000)
    out: list[tuple[bytes, bytes]] = []
    for chunk in range(0, n, CHUNK_CASES):
        cases = min(CHUNK_CASES, n - chunk)
        for e in sample_ticket_events(cases, now_ms - 3_600_000, 3_600_000, seed=1_000_000 + chunk):
            if e["status"] == "created":
                out.append((e["ticket_id"].encode(), json.dumps(e).encode()))
    return out


def run_input(args: argparse.Namespace, label: str, messages: list[tuple[bytes, bytes]], checkpoints: list[int],
              grace_seconds: int | None, tmp: Path) -> tuple[Result, float]:
    """Produce ``messages`` to a fresh namespace, run one worker over them (``grace_seconds=None``: the default
    grace); returns (result, RSS MB of the worker right after start-up)."""
    bootstrap = get_settings().kafka_bootstrap
    ns = fresh_namespace(args.partitions, "mem")
    produce(bootstrap, topics.for_namespace(ns).ingest, messages)
    worker_id = f"bench-memory-{uuid.uuid4().hex[:8]}"
    launched = time.monotonic()
    workers = start_workers(worker_env(ns, worker_id, args.partitions, f"chdb://{tmp / ns}", grace_seconds), 1, tmp, ns)
    assert workers[0].proc is not None
    idle_mb = proc_hwm_mb(workers[0].proc.pid)
    try:
        return follow_workers(label, bootstrap, ns, worker_id, workers, len(messages), launched, args.timeout,
                              checkpoints), idle_mb
    finally:
        for worker in workers:
            worker.stop()


def rows(result: Result, idle_mb: float, checkpoints: list[int], unit: str) -> list[str]:
    """One table row per checkpoint: peak RSS there and its growth per 1,000 events since the previous one."""
    out = []
    previous = (0, idle_mb)
    for c in sorted(checkpoints):
        rss = result.extra.get(f"rss_mb_at_{c}")
        if rss is None:
            out.append(f"| {result.name} | {c:,} | — | — | not reached: {result.note} |")
            continue
        per_k = (rss - previous[1]) / (c - previous[0]) * 1000
        out.append(f"| {result.name} | {c:,} {unit} | {rss:,.0f} | {per_k:.2f} | "
                   f"{'' if previous[0] else f'after start-up: {idle_mb:.0f} MB'} |")
        previous = (c, rss)
    return out


def main(args: argparse.Namespace, command: str) -> int:
    """The open-case run, the steady stream, the shuffled mix (each unless its checkpoints are empty); writes
    the section "Memory"."""
    lines = ["| input | processed (both stages) | peak RSS MB (VmHWM) | MB per 1,000 more events | note |",
             "|---|---:|---:|---:|---|"]
    status = 0
    with scratch_dir() as tmp:
        hours = args.memory_stream_hours
        runs = [("open cases (ticket created only)", args.memory_cases, "cases", open_cases, GRACE_SECONDS),
                (f"steady stream ({hours:g} h in event-time order, default grace)", args.memory_stream, "events",
                 lambda n: generate(n, hours=hours), None),
                ("shuffled mix (throughput input, 5 h grace)", args.memory_mix, "events", generate, GRACE_SECONDS)]
        for label, checkpoints, unit, make, grace in runs:
            if not checkpoints:
                continue
            print(f"memory: {label}, {max(checkpoints):,} events ...", flush=True)
            result, idle_mb = run_input(args, label, make(max(checkpoints)), checkpoints, grace, tmp)
            lines += rows(result, idle_mb, checkpoints, unit)
            print("\n".join(lines), flush=True)
            status |= result.rate is None
    body = "\n".join([
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, command: `{command}`", f"- machine: {machine()}",
        f"- one worker (chDB, {args.partitions} partitions, default entity_cache_per_partition) per input; peak "
        "RSS read when at least that many events went through both stages of the one run (checkpoints, not "
        "separate runs)", "", *lines])
    update_results(args.output, "Memory", body)
    print(f"written to {args.output}")
    return status
