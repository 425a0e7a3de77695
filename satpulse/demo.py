"""``satpulse demo``: the main job end to end on one machine.

Starts the local Kafka broker (``satpulse services``), uses embedded ClickHouse (chDB) in a fresh directory,
writes sample traffic (with a few malformed lines) to a JSONL file, publishes it with the JSONL adapter, runs
the worker until every rated event is stored, then prints CSAT per channel from ClickHouse and the
worker's Prometheus metrics.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

from satpulse import services
from satpulse.sample import sample_submissions, write_jsonl
from satpulse.settings import get_settings
from satpulse.worker_process import WorkerProcess, metric_sum

BAD_LINES = ('{"kind": "feedback", "event_id": ', "not json at all", '["a", "list"]')


def run_demo(events: int) -> int:
    """Run the demo; returns the process exit code. Blocks for about a minute."""
    settings = get_settings()
    services.ensure_up(["kafka"])
    run = uuid.uuid4().hex[:8]
    run_dir = settings.work_dir / "demo" / run
    run_dir.mkdir(parents=True)
    env = {
        "SATPULSE_TOPIC_NAMESPACE": f"demo-{run}",
        "SATPULSE_WORKER_ID": f"satpulse-demo-{run}",
        "SATPULSE_CLICKHOUSE_URL": f"chdb://{run_dir / 'chdb'}",
        "SATPULSE_IDLE_SECONDS": "2",
        "SATPULSE_ROLLING_REFRESH_SECONDS": "1",  # so that the rolling CSAT gauges are shown before the demo ends
    }
    now_ms = int(time.time() * 1000)
    path = run_dir / "sample.jsonl"
    write_jsonl(path, sample_submissions(events, now_ms - 30 * 60_000, 29 * 60_000), BAD_LINES)
    print(f"sample traffic: {events} submissions + {len(BAD_LINES)} malformed lines -> {path}")

    worker = WorkerProcess(env, run_dir / "worker.log", settings.worker_web_port)
    worker.start()
    try:
        subprocess.run([sys.executable, "-m", "satpulse.cli", "publish", str(path)], env=worker.env, check=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            samples = worker.scrape()
            if metric_sum(samples, "satpulse_feedback_rated_total") >= events:
                break
            time.sleep(1)
        time.sleep(settings.idle_seconds + 3)  # let the watermark pass the last windows
        samples = worker.scrape()
    finally:
        worker.stop()

    from sinks.clickhouse import connect
    from sinks.queries import totals

    ch = connect(env["SATPULSE_CLICKHOUSE_URL"])
    print("\nCSAT per channel (ClickHouse, 1-minute windows merged):")
    print(f"{'channel':<10}{'rated':>8}{'satisfied':>11}{'CSAT %':>9}{'avg score':>11}")
    for row in totals(ch, "channel", settings.window_seconds):
        agg = row.agg
        csat = "-" if agg.csat_percent is None else f"{agg.csat_percent:.1f}"
        avg = "-" if agg.average_score is None else f"{agg.average_score:.2f}"
        print(f"{row.dimension_value:<10}{agg.rated:>8}{agg.satisfied:>11}{csat:>9}{avg:>11}")
    print("\nworker /metrics (selection):")
    for (name, labels), value in sorted(samples.items()):
        if name.startswith(("satpulse_rolling_csat", "satpulse_dead_letters", "satpulse_window_csat")):
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            print(f"  {name}{{{label_text}}} {value:g}")
    return 0
