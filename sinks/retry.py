"""Retrying a ClickHouse call until it succeeds: how every sink waits out a failure.

Every failure is retried (a batch is never dropped), but a permanent error, ClickHouse refusing the statement
itself (:attr:`sinks.clickhouse.ClickHouseError.permanent`), is counted, logged and flagged apart from an outage:
only an operator can end it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from satpulse import metrics
from sinks.clickhouse import ClickHouseError

log = logging.getLogger(__name__)
T = TypeVar("T")
SINK = "clickhouse"  # the sink label of the metrics
FIRST_DELAY = 0.2  # seconds before the first retry; doubled after each failure up to max_delay
_BLOCKED = metrics.SINK_BLOCKED_PERMANENT.labels(SINK)  # exposed as 0 from import on


class RetryStopped(Exception):
    """The retry loop gave up because a stop was requested (nothing was written)."""


def retry_clickhouse(what: str, call: Callable[[], T], max_delay: float = 30.0,
                     sleep: Callable[[float], None] = time.sleep,
                     stopping: threading.Event | None = None) -> T:
    """Return ``call()`` once it does not raise ClickHouseError, calling it again after each failure with an
    exponential back-off from 0.2 s up to ``max_delay`` seconds. Blocks the calling thread for as long as
    ClickHouse fails: it waits with ``sleep``, or with ``stopping.wait`` when ``stopping`` is given, so that
    setting ``stopping`` ends a wait at once.

    Every failure is counted in satpulse_sink_errors_total{kind="transient"|"permanent"} and logged (see
    :func:`_report`). From the first permanent error until the loop ends, it counts in
    satpulse_sink_blocked_permanent.

    Raises RetryStopped (chained to the last ClickHouseError) when ``stopping`` is set after a failed attempt,
    instead of waiting again; any other exception of ``call`` propagates unchanged."""
    reported: set[tuple[str, int | None]] = set()
    delay = FIRST_DELAY
    blocked = False
    try:
        while True:
            try:
                return call()
            except ClickHouseError as exc:
                if exc.permanent and not blocked:
                    blocked = True
                    _BLOCKED.inc()
                _report(what, exc, delay, reported)
                if _stop_requested(delay, sleep, stopping):
                    raise RetryStopped(f"ClickHouse {what} abandoned: stop requested") from exc
            delay = min(delay * 2, max_delay)
    finally:
        if blocked:
            _BLOCKED.dec()


def _report(what: str, exc: ClickHouseError, delay: float, reported: set[tuple[str, int | None]]) -> None:
    """Count one failure by kind and log it. A permanent error is logged at ERROR with its code and statement
    the first time its (what, code) is in ``reported`` (which it updates), at WARNING without the statement
    after; a transient error at WARNING. Never raises."""
    kind = "permanent" if exc.permanent else "transient"
    metrics.SINK_ERRORS.labels(SINK, kind).inc()
    if not exc.permanent:
        log.warning("ClickHouse %s failed, retrying in %.1fs: %s", what, delay, exc)
    elif (what, exc.code) not in reported:
        reported.add((what, exc.code))
        log.error("ClickHouse %s refused with permanent error code %s, retrying in %.1fs until the cause is "
                  "fixed (nothing is skipped); statement: %s; error: %s", what, exc.code, delay, exc.statement, exc)
    else:
        log.warning("ClickHouse %s refused again with permanent error code %s, retrying in %.1fs",
                    what, exc.code, delay)


def _stop_requested(delay: float, sleep: Callable[[float], None], stopping: threading.Event | None) -> bool:
    """Wait ``delay`` seconds, less if ``stopping`` is set meanwhile; True when a stop was requested (before or
    during the wait), without waiting if it already was. Blocks."""
    if stopping is None:
        sleep(delay)
        return False
    return stopping.wait(delay)
