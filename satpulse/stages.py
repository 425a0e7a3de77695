"""The worker's stages: the names settings use (``worker_stages``, ``satpulse worker --stages``) and the one
place that maps them to the ``stage`` label of the Prometheus metrics (:data:`satpulse.metrics.STAGE_LABEL`)."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """A stage of the worker, in the order a batch passes them. Its value is the name settings use."""

    CLEAN = "clean"  # raw submissions (ingest topic) -> clean events or dead letters
    WINDOW = "window"  # clean events -> window cells and clean events in ClickHouse
    DEAD_LETTERS = "dead_letters"  # dead-letter topic -> table dead_letters
