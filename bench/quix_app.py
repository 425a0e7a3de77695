"""Quix Streams peer: json decode, validation, 1-minute tumbling window of rated / satisfied per channel.

Needs ``pip install quixstreams`` (not a project dependency; see bench/README.md). Run by bench/run.py as
``python bench/quix_app.py`` with BENCH_* environment variables; it runs until killed. Written as the Quix
docs recommend: ``group_by`` to key by channel (a repartition topic), event time from a timestamp extractor,
``tumbling_window(...).reduce(...).final()``.
"""

from __future__ import annotations

import os
from typing import Any

from quixstreams import Application
from quixstreams.models import TimestampType

_GOOD = {"good", "yes", "great", "amazing", "very satisfied"}
_SCALES = {"1-5", "1-3", "1-7", "1-10", "0-10", "freshdesk", "helpscout", "label5", "emoji", "good_bad"}


def valid(event: Any) -> bool:
    """The cheap part of our validation: an object with a kind, id, numeric event time and channel."""
    return (isinstance(event, dict) and event.get("kind") in ("feedback", "ticket")
            and isinstance(event.get("event_id"), str) and isinstance(event.get("event_time"), int)
            and isinstance(event.get("channel"), str))


def satisfied(event: dict[str, Any]) -> int:
    """Satisfied flag for the sample scales (top-two-box / native good); a rough stand-in for streams/scales.py."""
    value, scale = event.get("rating_value"), event.get("rating_scale")
    if scale == "freshdesk":
        return int(value in (102, 103))
    if scale == "0-10":
        return int(isinstance(value, int) and value >= 8)
    if isinstance(value, str):
        try:
            return int(float(value) >= 4)
        except ValueError:
            return int(value in _GOOD)
    return int(isinstance(value, int) and value >= 4)


def counts(event: dict[str, Any]) -> dict[str, int]:
    rated = int(event.get("kind") == "feedback" and event.get("rating_scale") in _SCALES)
    return {"rated": rated, "satisfied": satisfied(event) if rated else 0}


def event_time(value: Any, headers: Any, timestamp: int, timestamp_type: TimestampType) -> int:
    return int(value["event_time"]) if isinstance(value, dict) and "event_time" in value else timestamp


def main() -> None:
    app = Application(
        broker_address=os.environ["BENCH_BOOTSTRAP"],
        consumer_group=os.environ["BENCH_GROUP"],
        auto_offset_reset="earliest",
        commit_interval=1.0,  # same commit cadence as our worker (the Quix default is 5 s)
        state_dir=os.environ["BENCH_DATADIR"],
    )
    topic = app.topic(os.environ["BENCH_TOPIC"], value_deserializer="json", timestamp_extractor=event_time)
    sdf = app.dataframe(topic)
    sdf = sdf.filter(valid)
    sdf = sdf.group_by("channel")
    sdf = sdf.apply(counts)
    # input is shuffled over hours of event time, so run.py passes a grace period that keeps every window open
    # (ours gets the same); with grace 0 Quix drops and logs nearly every event as late
    sdf = sdf.tumbling_window(60_000, grace_ms=int(os.environ["BENCH_GRACE_MS"])).reduce(
        reducer=lambda agg, c: {"rated": agg["rated"] + c["rated"], "satisfied": agg["satisfied"] + c["satisfied"]},
        initializer=lambda c: c,
    ).final()
    app.run()


if __name__ == "__main__":
    main()
