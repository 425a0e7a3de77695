"""send_in_batches: records split over as many record batches as the batch size needs, in order, none lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from satpulse.record_batches import send_in_batches


class FakeBatch:
    """Holds records up to ``size`` bytes of values (an empty batch takes any record that fits the size)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: None) -> object | None:
        if sum(len(v) for _, v in self.records) + len(value) > self.size:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    def __init__(self, size: int) -> None:
        self.size = size
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes]]]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.size)

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.records))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(len(self.sent))
        return future


@given(st.lists(st.binary(min_size=1, max_size=10)), st.integers(min_value=10, max_value=40))
def test_every_record_is_sent_once_in_order_and_the_counts_match_the_batches(values: list[bytes], size: int) -> None:
    producer = FakeProducer(size)
    records = [(str(i).encode(), v) for i, v in enumerate(values)]
    sent = asyncio.run(send_in_batches(producer, "t", 3, records))
    assert [r for _, _, batch in producer.sent for r in batch] == records
    assert [count for count, _ in sent] == [len(batch) for _, _, batch in producer.sent]
    assert all(batch and (topic, partition) == ("t", 3) for topic, partition, batch in producer.sent)
    assert len(sent) <= max(1, sum(map(len, values)) * 2 // size + 1)  # batches are filled, not one per record


def test_a_record_larger_than_a_batch_is_refused_not_dropped() -> None:
    producer = FakeProducer(10)
    with pytest.raises(ValueError, match="11 bytes"):
        asyncio.run(send_in_batches(producer, "t", 0, [(b"k", b"x" * 5), (b"k", b"y" * 11)]))
