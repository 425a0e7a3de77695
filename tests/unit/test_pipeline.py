"""The worker's batch protocol in-process: a rebalance waits for the batches in flight."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from satpulse.settings import Settings
from streams.pipeline import Pipeline


def test_a_rebalance_waits_until_the_batches_in_flight_are_committed() -> None:
    async def scenario() -> list[str]:
        pipeline = Pipeline(Settings())
        events: list[str] = []
        in_flight = asyncio.get_running_loop().create_future()
        pipeline._in_flight.add(in_flight)
        in_flight.add_done_callback(pipeline._in_flight.discard)

        async def revoke() -> None:
            await pipeline.revoke([TopicPartition("satpulse.ingest.v1", 0)])
            events.append("revoked")

        revoking = asyncio.create_task(revoke())
        await asyncio.sleep(0.05)
        events.append("committed")
        in_flight.set_result(None)
        await revoking
        assert not pipeline._in_flight
        return events

    assert asyncio.run(scenario()) == ["committed", "revoked"]
