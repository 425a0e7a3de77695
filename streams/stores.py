"""The stores the worker writes to, as one bundle built by a factory the pipeline is given (default:
:func:`clickhouse_stores`; tests pass in-memory ones from tests/fakes.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from domain.store import WindowStateStore
from satpulse import topics
from satpulse.settings import Settings
from sinks.clickhouse import ClickHouse, connect_configured
from sinks.dead_letter_store import DeadLetterStore
from sinks.migrations import migrate
from sinks.window_store import WindowStore


class DeadLetterSink(Protocol):
    """Where the dead-letter stage stores the dead-letter topic (sinks.dead_letter_store.DeadLetterStore)."""

    def add(self, value: bytes, topic: str, partition: int, offset: int) -> None:
        """Buffer the dead-letter message at (topic, partition, offset). No I/O, never raises."""

    def flush(self) -> int:
        """Write the buffer; returns how many. Blocks; raises the sink's error and keeps the buffer for a retry.
        Idempotent per origin, stage and reason."""


@dataclass(frozen=True, slots=True)
class Stores:
    """The window store, the dead-letter store and the connection they share: pages served by the worker read
    through it, and the pipeline closes it at stop."""

    window: WindowStateStore
    dead_letters: DeadLetterSink
    connection: ClickHouse


StoreFactory = Callable[[Settings], Stores]  # blocking; raises ClickHouseError (retried) or MigrationRequired


def clickhouse_stores(settings: Settings) -> Stores:
    """Connect to ``settings.clickhouse_url``, apply the pending migrations and build the ClickHouse stores.
    Blocks; raises ClickHouseError while ClickHouse is down, MigrationRequired when a migration needs an
    operator (satpulse migrate)."""
    s = settings
    ch = connect_configured(s)
    migrate(ch)
    window = WindowStore(ch, topics.FEEDBACK, topics.TICKETS, s.window_seconds, s.rollup_window_seconds,
                         s.rollup_interval_seconds)
    return Stores(window, DeadLetterStore(ch), ch)
