"""Insert throughput of ``WindowStore.write`` on one engine: 50,000 clean-event rows, then 50,000 window-cell
rows, in batches of 5,000; then the latency of small writes (200 writes of 100 cell rows, about what a worker
batch writes), median and p99.

Usage: ``python bench/insert_throughput.py chdb:///tmp/x`` or
``python bench/insert_throughput.py clickhouse://default:@127.0.0.1:19000/bench``; on a cluster, the replicas and
the cluster name (replicated tables, quorum inserts: settings clickhouse_cluster, clickhouse_insert_quorum):
``python bench/insert_throughput.py clickhouse://default:@127.0.0.1:19100,127.0.0.1:19200/bench satpulse``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from domain.aggregates import rating_agg
from domain.windows import CellRow
from sinks.clickhouse import connect
from sinks.migrations import migrate
from sinks.window_store import WindowStore

ROWS = 50_000
BATCH = 5_000
SMALL_WRITES, SMALL_BATCH = 200, 100
BASE = 1_767_225_600_000


def event(i: int) -> dict[str, Any]:
    return {
        "rating_id": f"r{i}", "rating_version": 0, "event_id": f"e{i}", "source": "s", "channel": "chat",
        "event_time": BASE + i * 1000, "ingest_time": BASE, "ticket_id": None, "agent": None, "team": "a",
        "category": None, "product": None, "customer_id": None, "native_value": "4", "native_scale": "1-5",
        "score": 4.0, "satisfied": True, "comment": "ok", "sentiment": None,
    }


def timed(name: str, write: Callable[[Sequence[Any]], None], rows: Sequence[Any], engine: str) -> None:
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        write(rows[start:start + BATCH])
    seconds = time.perf_counter() - started
    print(f"{engine} {name}: {len(rows)} rows in {seconds:.2f} s = {len(rows) / seconds:,.0f} rows/s")


def main(url: str, cluster: str | None = None) -> None:
    ch = connect(url, cluster)
    migrate(ch)
    store = WindowStore(ch, "fb", "tk", 60)
    engine = url.split(":", 1)[0] + (f" cluster {cluster}" if cluster else "")
    events = [(0, i, event(i)) for i in range(ROWS)]
    cells = [CellRow(("fb", 0), ("channel", f"c{i % 50}", BASE + i * 60_000), rating_agg(True, 4.0), i)
             for i in range(ROWS)]
    timed("event rows", lambda batch: store.write([], batch, []), events, engine)
    timed("cell rows", lambda batch: store.write(batch, [], []), cells, engine)
    latencies = []
    for start in range(0, SMALL_WRITES * SMALL_BATCH, SMALL_BATCH):
        started = time.perf_counter()
        store.write([CellRow(c.source, c.key, c.agg, c.version + ROWS) for c in cells[start:start + SMALL_BATCH]],
                    [], [])
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    print(f"{engine} small writes ({SMALL_BATCH} cell rows): median {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:3])
