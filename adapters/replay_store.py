"""Accepted webhook delivery ids on disk (sqlite3), so that a restarted ingestion service still refuses a replay.

:class:`SqliteReplayStore` keeps ``(delivery id, accepted at)`` rows, bounded like the in-memory
:class:`adapters.replay_guard.ReplayGuard`: rows older than ``ttl_s`` are deleted and, past ``max_size`` rows, the
oldest go first (exactly on load, every ``PRUNE_EVERY`` adds while running). Every method blocks on file I/O (a
one-row write in WAL mode is about 50 microseconds here, a WAL checkpoint now and then takes milliseconds; loading
55 000 ids about 40 ms) and must be called from one thread at a time: :class:`ThreadedReplayStore` runs the writes
on one worker thread, batched into one transaction per drain, so that the service's event loop never waits on
disk.

Durability: ``synchronous=NORMAL`` in WAL mode -- a committed row survives the process being killed or restarted;
a power loss may drop the last rows (the replayed events are then deduplicated downstream by event id).
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (delivery_id TEXT PRIMARY KEY, accepted_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (accepted_at);
"""


class SqliteReplayStore:
    """Delivery ids accepted within ``ttl_s``, at most ``max_size`` of them (plus up to ``PRUNE_EVERY`` not yet
    pruned), in the sqlite3 file ``path`` (created with its parent directory). Raises sqlite3.Error when the file
    cannot be opened or written."""

    PRUNE_EVERY = 1024  # pruning scans the index: amortised over this many adds

    def __init__(self, path: Path, max_size: int, ttl_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: created on the caller's thread, used on ThreadedReplayStore's one worker
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._max_size = max_size
        self._ttl_s = ttl_s
        self._adds = 0

    def load(self, now: float) -> list[tuple[str, float]]:
        """Drop what has expired or is over the size bound; return the rest as ``(id, accepted_at)``, oldest
        first (the order :meth:`ReplayGuard.restore` expects)."""
        with self._db:
            self._prune(now)
            rows = self._db.execute(
                "SELECT delivery_id, accepted_at FROM deliveries ORDER BY accepted_at").fetchall()
        return [(str(key), float(at)) for key, at in rows]

    def add(self, key: str, accepted_at: float) -> None:
        """Record one accepted delivery (an existing id gets the new time)."""
        self.add_many([(key, accepted_at)])

    def add_many(self, entries: list[tuple[str, float]]) -> None:
        """Record accepted deliveries in one transaction (one commit for the lot). Whenever the adds pass a
        multiple of ``PRUNE_EVERY`` the bounds are enforced in the same transaction, so the file holds at most
        ``max_size + PRUNE_EVERY + len(entries)`` rows."""
        if not entries:
            return
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO deliveries (delivery_id, accepted_at) VALUES (?, ?)",
                                 entries)
            before, self._adds = self._adds, self._adds + len(entries)
            if before // self.PRUNE_EVERY != self._adds // self.PRUNE_EVERY:
                self._prune(max(at for _, at in entries))

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM deliveries").fetchone()
        return int(count)

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM deliveries WHERE accepted_at < ?", (now - self._ttl_s,))
        self._db.execute(
            "DELETE FROM deliveries WHERE delivery_id IN (SELECT delivery_id FROM deliveries "
            "ORDER BY accepted_at DESC LIMIT -1 OFFSET ?)", (self._max_size,))

    def close(self) -> None:
        self._db.close()


class ThreadedReplayStore:
    """A :class:`SqliteReplayStore` written from the event loop without blocking it: :meth:`add` queues the id,
    and one drain task hands everything queued meanwhile to a dedicated thread as one transaction (group commit:
    under load, one commit serves many requests). Use it as a context manager, or call :meth:`close`."""

    def __init__(self, store: SqliteReplayStore) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-store")
        self._queue: list[tuple[str, float, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def add(self, key: str, accepted_at: float) -> None:
        """Returns once the id is committed to the file. Raises sqlite3.Error when the batch it was in failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((key, accepted_at, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await loop.run_in_executor(self._executor, self.store.add_many, [(k, at) for k, at, _ in batch])
            except Exception as exc:  # sqlite3.Error: every waiter of this batch gets it
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def close(self) -> None:
        """Wait for the write in progress, then close the file (call it once no request is waiting in add)."""
        self._executor.shutdown(wait=True)
        self.store.close()

    def __enter__(self) -> ThreadedReplayStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
