"""``satpulse demo``: the main job end to end on one machine, ending on the live dashboard.

Starts the local Kafka broker (``satpulse services``) unless it runs, uses embedded ClickHouse (chDB) in a
fresh directory, writes sample traffic to a JSONL file (ratings of the last 30 minutes, ratings of the same
half hour a week ago so that the dashboard shows trends, support cases of the last few hours and a few
malformed lines) and publishes it with the JSONL adapter; runs the worker until every rating is counted, prints
CSAT per channel (from the worker's dashboard data: chDB admits one process, the worker) and the worker's
Prometheus metrics, then leaves the worker running and prints the dashboard's URL. Ctrl-C (or SIGTERM) stops
the worker, and Kafka if the demo started it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

from devtools import services
from devtools.sample import sample_submissions, sample_ticket_events, write_jsonl
from devtools.worker_process import WorkerProcess, metric_sum
from satpulse.settings import get_settings

BAD_LINES = ('{"kind": "feedback", "event_id": ', "not json at all", '["a", "list"]')
WEEK_MS = 7 * 86_400_000


def run_demo(events: int) -> int:
    """Run the demo; returns the process exit code: 0 after Ctrl-C/SIGTERM, the worker's code if it exits by
    itself. Blocks until then (the dashboard is up after about half a minute)."""
    settings = get_settings()
    started = [] if services.status(["kafka"])["kafka"].state == "running" else ["kafka"]
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
    last_week = events // 2
    path = run_dir / "sample.jsonl"
    traffic = [*sample_submissions(last_week, now_ms - WEEK_MS - 30 * 60_000, 29 * 60_000, seed=8),
               *sample_submissions(events, now_ms - 30 * 60_000, 29 * 60_000),
               *sample_ticket_events(events // 25, now_ms - 4 * 3_600_000, 45 * 60_000)]
    write_jsonl(path, iter(traffic), BAD_LINES)
    print(f"sample traffic: {events} ratings, {last_week} ratings a week ago, {events // 25} support cases + "
          f"{len(BAD_LINES)} malformed lines -> {path}")

    worker = WorkerProcess(env, run_dir / "worker.log", settings.worker_web_port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    try:
        worker.start()
        subprocess.run([sys.executable, "-m", "satpulse.cli", "publish", str(path)], env=worker.env, check=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if metric_sum(worker.scrape(), "satpulse_feedback_rated_total") >= events + last_week:
                break
            time.sleep(1)
        time.sleep(settings.idle_seconds + 3)  # let the watermark pass the last windows
        url = f"http://127.0.0.1:{settings.worker_web_port}/dashboard"
        print_channels(fetch_json(f"{url}/data?dimension=channel&period=1h"))
        print_metrics(worker.scrape())
        print(f"\ndashboard (live): {url}\nCtrl-C stops the worker{' and Kafka' if started else ''}.", flush=True)
        assert worker.proc is not None  # started
        return worker.proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        worker.stop()
        services.ensure_down(started)


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def print_channels(data: dict[str, Any]) -> None:
    """CSAT per channel over the last hour, from the dashboard's data."""
    print("\nCSAT per channel, last hour (the dashboard's figures; ClickHouse, 1-minute windows merged):")
    print(f"{'channel':<10}{'rated':>8}{'satisfied':>11}{'CSAT %':>9}{'avg score':>11}{'vs last week':>14}")
    for row in data["by_value"]:
        csat = "-" if row["csat_percent"] is None else f"{row['csat_percent']:.1f}"
        avg = "-" if row["average_score"] is None else f"{row['average_score']:.2f}"
        trend = "-" if row["trend_pp"] is None else f"{row['trend_pp']:+.1f} pts"
        print(f"{row['value']:<10}{row['rated']:>8}{row['satisfied']:>11}{csat:>9}{avg:>11}{trend:>14}")


def print_metrics(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
    print("\nworker /metrics (selection):")
    for (name, labels), value in sorted(samples.items()):
        if name.startswith(("satpulse_rolling_csat", "satpulse_dead_letters", "satpulse_window_csat")):
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            print(f"  {name}{{{label_text}}} {value:g}")
