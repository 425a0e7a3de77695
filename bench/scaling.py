"""Scaling of our worker over partitions and worker processes (issue 7); ``bench/run.py --modes scaling``.

For every (P partitions, W workers) cell: a fresh namespace with P partitions per topic, the same N raw
submissions as the throughput table (``run.generate``, produced once per cell), and W ``satpulse worker``
processes with the same worker id (one consumer group: they share the partitions), all writing to a fresh
database on the local ClickHouse SERVER (chDB allows one process per data directory, so every cell uses the
server, also the 1-worker ones). The workers are started and their group is stable BEFORE the input is produced
(no partition changes hands during the run); then the input is produced and followed like "ours" in the
throughput table (``run.follow_until_all``) until everything is consumed. events/s = N / (start of production
-> everything consumed); CPU s / 1M = CPU of all W processes over that interval / N; peak RSS of the largest.

Cluster mode (issue 17): ``python bench/scaling.py --cluster`` runs the same cells with 1, 2 and 3 workers on the
local Kafka cluster of ``satpulse services up --cluster`` (topics with replication factor 3, min ISR 2; the workers
produce with acks=all) and the ClickHouse server, and measures the CPU of every process over each cell: workers,
each broker, ClickHouse. It starts what is not running and stops what it started; results go to
bench/results/<date>-cluster-scaling.md, one section per run (``SATPULSE_KAFKA_CLUSTER_PORTS='[19592]'``
gives the 1-broker baseline on the same code path).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import latency
from run import (
    BENCH_DIR,
    Result,
    fmt,
    follow_workers,
    fresh_namespace,
    generate,
    int_list,
    machine,
    pids_of,
    proc_cpu,
    produce,
    scratch_dir,
    start_workers,
    update_results,
    worker_env,
)

from devtools import services
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
    from kafka.errors import CoordinatorNotAvailableError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                info = admin.describe_groups([group]).get(group) or {}
            except CoordinatorNotAvailableError:  # a fresh cluster still creating __consumer_offsets
                info = {}
            if info.get("group_state") == "Stable" and len(info.get("members") or ()) == members:
                return
            time.sleep(0.5)
    finally:
        admin.close()
    raise TimeoutError(f"group {group} not stable with {members} members after {timeout:.0f}s")


def run_cell(args: argparse.Namespace, partitions: int, count: int, messages: list[tuple[bytes, bytes]],
             tmp: Path, others: dict[str, int] | None = None) -> Result:
    """One cell: start ``count`` workers of one group on a fresh namespace with ``partitions`` partitions, wait
    until the group is stable with all of them, then produce ``messages`` and follow until all is consumed.

    The workers join before the input exists so that no partition changes hands mid-run (a worker taking over
    a partition another one processed currently stalls: see bench/README.md). They consume while the input is
    produced, so the rate is counted from the start of production, and CPU from there (they idle before).
    ``others`` (name -> pid: brokers, ClickHouse) get their CPU seconds over the same interval in
    ``result.extra["cpu_s:<name>"]``, the interval in ``extra["interval_s"]``."""
    settings = get_settings()
    bootstrap = settings.kafka_bootstrap
    ns = fresh_namespace(partitions, "scale")
    worker_id = f"bench-scale-{uuid.uuid4().hex[:8]}"
    url = f"clickhouse://default:@127.0.0.1:{settings.clickhouse_native_port}/{ns}"
    workers = start_workers(worker_env(ns, worker_id, partitions, url), count, tmp, ns)
    try:
        wait_group(bootstrap, worker_id, count)
        pids = pids_of(workers)
        others_cpu0 = {name: proc_cpu(pid) for name, pid in (others or {}).items()}
        cpu0, started = sum(proc_cpu(p) for p in pids), time.monotonic()
        produce_s = produce(bootstrap, topics.for_namespace(ns).ingest, messages)
        result = follow_workers(f"{partitions} partition(s) x {count} worker(s)", bootstrap, ns, worker_id,
                                workers, len(messages), started, args.timeout)
        result.extra["interval_s"] = time.monotonic() - started
        for name, pid in (others or {}).items():
            result.extra[f"cpu_s:{name}"] = proc_cpu(pid) - others_cpu0[name]
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


# ----------------------------------------------------------------------------------------------- cluster mode
IDLE_SECONDS = 10.0  # CPU of the brokers and ClickHouse without traffic is measured over this long first


def cluster_table(results: list[Result], others: list[str]) -> str:
    """Rate and CPU per process of each cell: CPU s / 1M events, and in brackets % of one core over the cell."""
    lines = ["| workers | events | events/s (produce start → all consumed) | workers: CPU s / 1M (% of a core) | "
             + " | ".join(f"{name}: CPU s / 1M (%)" for name in others) + " | all processes: CPU s / 1M (% of the "
             "2 cores) | note |", "|---|---:|---:|---:|" + "---:|" * len(others) + "---:|---|"]
    for r in results:
        if r.rate is None or r.cpu_per_m is None:
            lines.append(f"| {r.name} | {r.events:,} | — |" + " — |" * (len(others) + 2) + f" {r.note} |")
            continue
        wall = r.extra["interval_s"]
        cells = [(r.cpu_per_m, r.cpu_per_m * r.events / 1e6 / wall)]
        cells += [(r.extra[f"cpu_s:{n}"] / r.events * 1e6, r.extra[f"cpu_s:{n}"] / wall) for n in others]
        total = sum(c for c, _ in cells)
        lines.append(f"| {r.name} | {r.events:,} | {r.rate:,.0f} | "
                     + " | ".join(f"{c:.1f} ({100 * u:.0f} %)" for c, u in cells)
                     + f" | {total:.1f} ({100 * total * r.events / 1e6 / wall / (os.cpu_count() or 1):.0f} %) "
                       f"| {r.note} |")
    return "\n".join(lines)


def cluster_main(argv: list[str]) -> int:
    """``python bench/scaling.py --cluster [--events N] [--partitions P] [--workers 1,2,3]``: one cell per worker
    count on the local Kafka cluster (``services.kafka_cluster_env``: bootstrap = every node, replication factor
    3, min ISR 2) and the ClickHouse server of the settings. Starts what is not running, stops what it started;
    writes the section "<n> broker(s) ... (run of <time>)" of ``--output``. Returns 0 if every cell finished."""
    parser = argparse.ArgumentParser(prog="bench/scaling.py --cluster")
    parser.add_argument("--cluster", action="store_true", required=True)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6, help="per topic (6: equal shares for 1, 2, 3 workers)")
    parser.add_argument("--workers", type=int_list, default=[1, 2, 3])
    parser.add_argument("--timeout", type=float, default=900.0, help="per cell, seconds")
    parser.add_argument("--latency-rate", type=int_list, default=[],
                        help="offered events/s of latency runs after the cells (bench/latency.py's method: one worker, "
                             "chDB, 60 s of load, publish interval 0.25 s); default none")
    parser.add_argument("--output", type=Path,
                        default=BENCH_DIR / "results" / f"{time.strftime('%Y-%m-%d')}-cluster-scaling.md")
    args = parser.parse_args(argv)
    begun = time.gmtime()
    os.environ.update(services.kafka_cluster_env())
    get_settings.cache_clear()
    settings = get_settings()
    kafka_before = {st.name for st in services.kafka_cluster_status() if st.state == "running"}
    clickhouse_before = services.status(["clickhouse"])["clickhouse"].state == "running"
    print(f"starting the Kafka cluster ({settings.kafka_bootstrap}) and ClickHouse ...", flush=True)
    services.kafka_cluster_up()
    try:
        services.ensure_up(["clickhouse"])
        pids = {st.name: st.pid for st in services.kafka_cluster_status() if st.pid is not None}
        pids["clickhouse"] = services.status(["clickhouse"])["clickhouse"].pid or 0
        load_before = os.getloadavg()
        idle_cpu0 = {name: proc_cpu(pid) for name, pid in pids.items()}
        time.sleep(IDLE_SECONDS)
        idle = {name: (proc_cpu(pid) - idle_cpu0[name]) / IDLE_SECONDS for name, pid in pids.items()}
        messages = generate(args.events)
        results = []
        with scratch_dir() as tmp:
            for count in args.workers:
                print(f"cluster scaling: {args.partitions} partitions x {count} worker(s) ...", flush=True)
                results.append(run_cell(args, args.partitions, count, messages, tmp, pids))
                print(cluster_table(results[-1:], list(pids)), flush=True)
            latency_args = argparse.Namespace(partitions=args.partitions, latency_engine="chdb", latency_seconds=60.0,
                                              latency_warmup=10.0, latency_drain=60.0)
            latency_runs = []
            for rate in args.latency_rate:
                print(f"cluster latency: {rate:,} events/s ...", flush=True)
                latency_runs.append(latency.run_one(latency_args, rate, 0.25, tmp))
                print(latency.table(latency_runs[-1:], latency_args.latency_drain), flush=True)
    finally:
        if not clickhouse_before:
            services.ensure_down(["clickhouse"])
        if not kafka_before:
            services.kafka_cluster_down()
    nodes = len(settings.kafka_cluster_ports)
    title = (f"{nodes} broker(s), topics with replication factor {settings.topic_replication_factor}, "
             f"min.insync.replicas {settings.topic_min_insync_replicas} (run of {time.strftime('%H:%M %Z', begun)})")
    body = "\n".join([
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z', begun)}, command: `python bench/scaling.py {' '.join(argv)}`",
        f"- machine: {machine()}; load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())} (other jobs share the machine)",
        f"- idle CPU before the cells ({IDLE_SECONDS:.0f} s without traffic, % of a core): "
        + ", ".join(f"{name} {100 * share:.1f} %" for name, share in idle.items()),
        f"- input: {args.events:,} raw submissions (the throughput mix), produced once per cell (acks=1, in the "
        f"harness) to a fresh namespace with {args.partitions} partitions per topic; the workers (one consumer group, "
        "acks=all + idempotence for what they publish) write to a fresh database on one ClickHouse server",
        f"- {nodes} combined broker+controller JVM(s) (`satpulse services up --cluster`), every worker, ClickHouse and "
        f"the harness share the machine's {os.cpu_count()} cores: a 3rd worker can only use what the others leave; "
        "CPU s / 1M per process is the figure that carries over to bigger machines",
        "", cluster_table(results, list(pids)) if results else "(no scaling cells in this run: --workers empty)"])
    if latency_runs:
        body += "\n".join([
            "", "", "Latency (bench/latency.py's method and definition, bench/README.md): one `satpulse worker` (chDB, "
            f"default grace, {args.partitions} partitions) per row on this cluster, a producer process offering the "
            "load for 60 s (event_time = now), first 10 s left out; p50/p99 from produce to the window result on "
            "the metrics topic", "", latency.table(latency_runs, latency_args.latency_drain)])
    update_results(args.output, title, body)
    print(f"written to {args.output}")
    return 0 if all(r.rate is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(cluster_main(sys.argv[1:]))
