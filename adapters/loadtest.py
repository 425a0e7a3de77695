"""Bounded loopback load on a running ingestion service: ``python -m adapters.loadtest --url URL --secret S``.

Sends ``--requests`` signed Help Scout rating webhooks (each a distinct rating, so none is a replay) with
``--concurrency`` connections and prints requests/s and the status counts. Every 202 means the broker
acknowledged the submission (acks=all). Not a test: numbers depend on the machine (the client shares its CPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import aiohttp

from adapters.vendors.registry import VENDORS

HELPSCOUT = VENDORS["helpscout"]


def _body(i: int) -> bytes:
    return json.dumps({"id": 10_000_000 + i, "customer": {"id": i % 977}, "ticketId": 500_000 + i,
                       "mailbox": {"id": 1, "name": "Load"}, "rating": ("Great", "Okay", "Bad")[i % 3],
                       "comments": "load test", "createdAt": "2026-01-01T00:00:00Z",
                       "modifiedAt": "2026-01-01T00:00:00Z"}).encode()


def _headers(secret: str, body: bytes) -> dict[str, str]:
    """Signed as Help Scout signs (its declaration in adapters/vendors/helpscout.py), with its event header."""
    headers = {**HELPSCOUT.authentication.signed_headers(secret, body, time.time()),
               "Content-Type": "application/json"}
    if HELPSCOUT.event_header is not None:
        headers[HELPSCOUT.event_header] = "satisfaction.ratings"
    return headers


async def run(url: str, secret: str, requests: int, concurrency: int, offset: int = 0
              ) -> tuple[float, Counter[int]]:
    statuses: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(offset, offset + requests):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = _body(i)
            headers = _headers(secret, body)
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started, statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8088/webhooks/helpscout")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--offset", type=int, default=0, help="first rating number (distinct runs: no replays)")
    args = parser.parse_args()
    elapsed, statuses = asyncio.run(run(args.url, args.secret, args.requests, args.concurrency, args.offset))
    print(f"{args.requests} requests, concurrency {args.concurrency}: {elapsed:.2f} s, "
          f"{args.requests / elapsed:.0f} requests/s; statuses {dict(sorted(statuses.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
