"""Both public data sets replayed through the whole pipeline on the real broker (importer -> Kafka -> Faust
worker -> ClickHouse server); per-channel CSAT, average score and time metrics must equal an offline
computation written here from the CSV with the csv module."""

from __future__ import annotations

import csv
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from devtools.worker_process import WorkerProcess, wait_consumed
from satpulse import topics
from satpulse.settings import REPO_ROOT, get_settings
from sinks.clickhouse import connect
from sinks.queries import totals
from tests.integration.offline import free_port

pytestmark = pytest.mark.integration

DATA = REPO_ROOT.parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
FIELDS = ("rated", "satisfied", "score_micros", "created", "first_responses", "first_response_ms", "resolved",
          "resolution_ms")



def hms(text: str) -> int:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def pwc_offline() -> dict[str, dict[str, int]]:
    out: dict[str, int] = defaultdict(int)
    with (DATA / "pwc_call_centre" / "call_center_dataset.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            out["created"] += 1
            if row["Satisfaction rating"]:
                rating = int(row["Satisfaction rating"])
                out["rated"] += 1
                out["satisfied"] += rating >= 4
                out["score_micros"] += rating * 1_000_000
            if row["Answered (Y/N)"] == "Y":
                speed = int(row["Speed of answer in seconds"])
                out["first_responses"] += 1
                out["first_response_ms"] += speed * 1000
                if row["Resolved"] == "Y":
                    out["resolved"] += 1
                    out["resolution_ms"] += (speed + hms(row["AvgTalkDuration"])) * 1000
    return {"phone": dict(out)}


def kaggle_offline() -> dict[str, dict[str, int]]:
    """No creation time in this export: only ratings count; durations cannot be computed."""
    channel = {"Email": "email", "Phone": "phone", "Social media": "social", "Chat": "chat"}
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
    with (DATA / "kaggle_support_tickets" / "customer_support_tickets.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Customer Satisfaction Rating"]:
                rating = float(row["Customer Satisfaction Rating"])
                acc = out[channel[row["Ticket Channel"]]]
                acc["rated"] += 1
                acc["satisfied"] += rating >= 4
                acc["score_micros"] += round(rating * 1_000_000)
    return dict(out)


@pytest.mark.parametrize(("data_set", "offline"), [("pwc_call_centre", pwc_offline),
                                                   ("kaggle_support_tickets", kaggle_offline)])
def test_data_set_through_the_pipeline(services: Any, tmp_path: Path, data_set: str, offline: Any) -> None:
    namespace = f"ds-{uuid.uuid4().hex[:8]}"
    url = f"clickhouse://default:@127.0.0.1:{get_settings().clickhouse_native_port}/ds_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"g-{namespace}",
           "SATPULSE_CLICKHOUSE_URL": url, "SATPULSE_WORKER_WEB_PORT": str(port)}
    worker = WorkerProcess(env, tmp_path / "worker.log", port)
    worker.start(timeout=90)
    try:
        csv_path = next((DATA / data_set).glob("*.csv"))
        subprocess.run([sys.executable, "-m", "satpulse.cli", "import", str(csv_path), "--mapping",
                        str(REPO_ROOT / "mappings" / f"{data_set}.yaml")], env=worker.env, check=True,
                       capture_output=True, timeout=300)
        names = topics.for_namespace(namespace)
        wait_consumed(get_settings().kafka_bootstrap, f"g-{namespace}", [names.ingest], 240, [worker])
    finally:
        worker.stop()
    ch = connect(url)
    try:
        rows = {r.dimension_value: r.agg for r in totals(ch, "channel", 60)}
    finally:
        ch.close()
    got = {channel: {f: getattr(agg, f) for f in FIELDS} for channel, agg in rows.items()}
    want = {channel: {f: counts.get(f, 0) for f in FIELDS} for channel, counts in offline().items()}
    assert got == want
    for channel, agg in rows.items():  # the headline figures follow from the counts
        assert agg.csat_percent == pytest.approx(100 * want[channel]["satisfied"] / want[channel]["rated"])
        assert agg.average_score == pytest.approx(want[channel]["score_micros"] / 1e6 / want[channel]["rated"])
