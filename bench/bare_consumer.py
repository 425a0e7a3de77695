"""Bare consumer ceiling: aiokafka getmany loop that only json-decodes, fresh group, until N messages.

Prints one JSON line: {"count", "first", "done" (time.time() of first message / Nth message), "cpu_s",
"rss_hwm_kb", "cpu_first_s"} measured on itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer


def cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def consume(bootstrap: str, topic: str, group: str, n: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024,
                                fetch_max_bytes=16 * 1024 * 1024)
    await consumer.start()
    count, first, cpu_first = 0, 0.0, 0.0
    try:
        while count < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                if not first and records:
                    first, cpu_first = time.time(), cpu_seconds()
                for record in records:
                    json.loads(record.value)  # type: ignore[arg-type]
                count += len(records)
        done = time.time()
    finally:
        await consumer.stop()
    return {"count": count, "first": first, "done": done, "cpu_first_s": cpu_first}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()
    result = asyncio.run(consume(args.bootstrap, args.topic, args.group, args.events))
    print(json.dumps({**result, "cpu_s": cpu_seconds(), "rss_hwm_kb": hwm_kb()}), flush=True)


if __name__ == "__main__":
    main()
