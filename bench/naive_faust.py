"""Naive Faust baseline: one ``async for`` per event into a tumbling table (the baseline to beat).

Run by bench/run.py as ``python bench/naive_faust.py worker -l warn`` with BENCH_* environment variables.
It json-decodes each raw submission and counts it per channel in a 60 s tumbling Faust table (memory store,
changelog topic), i.e. what a first Faust version of the pipeline would look like without batching.
"""

from __future__ import annotations

import json
import os
from typing import Any

import faust

app = faust.App(
    os.environ["BENCH_GROUP"],
    broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
    web_port=int(os.environ["BENCH_WEB_PORT"]),
    web_host="127.0.0.1",
    topic_partitions=int(os.environ["BENCH_PARTITIONS"]),
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=1.0,  # commits at least every second, so "done" (committed offsets) shows within 1 s
    store="memory://",
    datadir=os.environ["BENCH_DATADIR"],
)
ingest = app.topic(os.environ["BENCH_TOPIC"], key_type=bytes, value_type=bytes, key_serializer="raw",
                   value_serializer="raw")
counts = app.Table("channel_counts", default=int).tumbling(60, expires=3600).relative_to_stream()


@app.agent(ingest)
async def count(stream: Any) -> None:
    async for value in stream:
        try:
            event = json.loads(value)
        except ValueError:
            continue
        counts[str(event.get("channel"))] += 1


if __name__ == "__main__":
    app.main()
