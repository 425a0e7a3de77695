"""Quix Streams peers of the benchmark, written as the Quix Streams docs recommend. ``python bench/quix_app.py JOB``
with BENCH_* environment variables (set by bench/run.py); it runs until killed. JOB is one of:

- ``job`` (the "quix" row): the same job as our worker. Cleaning with our pure functions
  (``streams.clean.parse_json_object`` + ``clean``); clean records go to ``<ns>.quix.clean.v1`` and rejected
  inputs to ``<ns>.quix.deadletter.v1`` with their reason (JSON, one ``to_topic`` that picks the topic per
  message). Per-entity state (``apply(stateful=True)``, keyed by the ingest key = the entity key) holds each
  rating's newest version and each case's folded lifecycle (``streams.entities``); every change emits the
  delta of the entity's contribution per window cell (old withdrawn, new added) over the 7 default dimensions
  (``expand=True``); newly quarantined case durations go to the dead-letter topic (a branch). The cell deltas
  are re-keyed by cell (``group_by``, a repartition topic), stamped with the cell's window start
  (``set_timestamp``) and summed in a 1-minute ``tumbling_window(...).reduce(...).final()`` whose closed windows
  go to ``<ns>.quix.windows.v1``.
- ``light`` (the "quix-light" row, kept for reference): json decode, cheap validation, ``group_by("channel")``,
  1-minute tumbling reduce of rated / satisfied per channel, ``.final()``.

Needs ``quixstreams`` (not a project dependency; see bench/README.md) and orjson; the ``job`` imports the repo's
``streams.clean`` / ``streams.entities`` (orjson + stdlib only), not ``satpulse`` (pydantic versions differ).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from quixstreams import Application, State, message_context
from quixstreams.models import TimestampType
from quixstreams.models.topics import TopicConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for streams.*

from streams.clean import Rejected, clean, parse_json_object
from streams.entities import (
    CaseRules,
    CaseState,
    Contribution,
    RatingState,
    apply_ticket_event,
    case_contribution,
    newer_rating,
    rating_contribution,
    rating_state,
)

# ------------------------------------------------------------------------------------- light ("quix-light")
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


def light(app: Application, grace_ms: int) -> None:
    topic = app.topic(os.environ["BENCH_TOPIC"], value_deserializer="json", timestamp_extractor=event_time)
    sdf = app.dataframe(topic)
    sdf = sdf.filter(valid)
    sdf = sdf.group_by("channel")
    sdf = sdf.apply(counts)
    sdf = sdf.tumbling_window(60_000, grace_ms=grace_ms).reduce(
        reducer=lambda agg, c: {"rated": agg["rated"] + c["rated"], "satisfied": agg["satisfied"] + c["satisfied"]},
        initializer=lambda c: c,
    ).final()


# ---------------------------------------------------------------------------------------------- job ("quix")
# the defaults of satpulse/settings.py, mirrored (satpulse.settings needs the project's pydantic versions):
# future_tolerance_seconds, window_seconds, dimensions, sla_*_seconds, max_duration_seconds
FUTURE_TOLERANCE_MS = 300 * 1000
WINDOW_MS = 60 * 1000
DIMENSIONS = ("all", "channel", "team", "agent", "category", "product", "source")
RULES = CaseRules(
    first_response_sla={"urgent": 3600, "high": 4 * 3600, "medium": 8 * 3600, "low": 24 * 3600},
    resolution_sla={"urgent": 4 * 3600, "high": 24 * 3600, "medium": 72 * 3600, "low": 168 * 3600},
    max_duration_ms=365 * 86400 * 1000)
# the scalar fields of streams.aggregates.WindowAgg that the window sums (not the duration sketches and the
# score histogram, whose quantiles our worker also publishes)
FIELDS = ("rated", "satisfied", "scored", "score_micros", "created", "reopened", "first_responses",
          "first_response_ms", "first_response_breaches", "resolved", "resolution_ms", "resolution_breaches")
STAGE = "cleaner"


def _dead_letter(reason: str, detail: str, stage: str, payload: bytes | str) -> dict[str, Any]:
    """A dead letter as JSON: the fields of schemas/dead_letter.avsc, the payload as text."""
    ctx = message_context()
    text = payload if isinstance(payload, str) else payload.decode("utf-8", "backslashreplace")
    return {"reason": reason, "detail": detail[:2000], "stage": stage, "origin_topic": ctx.topic,
            "origin_partition": ctx.partition, "origin_offset": ctx.offset, "payload": text,
            "failed_at": int(time.time() * 1000)}


def route(payload: bytes) -> dict[str, Any]:
    """Clean one raw submission: ``{"schema", "key", "record"}``, or a dead letter (has ``reason``)."""
    try:
        cleaned = clean(parse_json_object(payload), int(time.time() * 1000), FUTURE_TOLERANCE_MS)
    except Rejected as exc:
        return _dead_letter(exc.reason, exc.detail, STAGE, payload)
    except (ValueError, TypeError) as exc:  # as streams.cleaner.route: never fail the pipeline on an input
        return _dead_letter("unparseable_payload", f"cannot clean: {exc}", STAGE, payload)
    return {"schema": cleaned.schema, "key": cleaned.key, "record": cleaned.record}


# entity state as JSON (Quix state values): a rating as a list, a case as a dict
def _rating_from(data: list[Any] | None) -> RatingState | None:
    if data is None:
        return None
    version, event_id, at, dims, sat, score = data
    return RatingState(version, event_id, at, tuple((k, v) for k, v in dims), sat, score)


def _rating_to(s: RatingState) -> list[Any]:
    return [s.version, s.event_id, s.event_time, s.dims, s.satisfied, s.score]


def _case_from(data: dict[str, Any] | None) -> CaseState | None:
    if data is None:
        return None
    return CaseState(event_ids=frozenset(data["ids"]), created_at=data["created"],
                     first_response_at=data["first_response"], resolved_at=data["resolved"],
                     closed_at=data["closed"], reopened_at=tuple(data["reopened"]), priority=data["priority"],
                     dims=tuple((k, v) for k, v in data["dims"]), dims_stamp=tuple(data["stamp"]),
                     priority_stamp=tuple(data["priority_stamp"]), last_event_time=data["last"])


def _case_to(c: CaseState) -> dict[str, Any]:
    return {"ids": list(c.event_ids), "created": c.created_at, "first_response": c.first_response_at,
            "resolved": c.resolved_at, "closed": c.closed_at, "reopened": c.reopened_at, "priority": c.priority,
            "dims": c.dims, "stamp": c.dims_stamp, "priority_stamp": c.priority_stamp, "last": c.last_event_time}


def _deltas(old: Contribution, new: Contribution) -> list[dict[str, Any]]:
    """New minus old contribution per window cell, one message per cell that changed (nonzero fields only)."""
    sums: dict[tuple[str, str, int], list[int]] = {}
    for contribution, sign in ((old, -1), (new, 1)):
        scalars: dict[int, list[int]] = {}  # a contribution repeats one aggregate for every dimension
        for key, agg in contribution:
            values = scalars.get(id(agg))
            if values is None:
                values = scalars[id(agg)] = [sign * getattr(agg, f) for f in FIELDS]
            cell = sums.get(key)
            if cell is None:
                sums[key] = list(values)
            else:
                for i, x in enumerate(values):
                    cell[i] += x
    out = []
    for (dimension, value, start), cell in sums.items():
        if any(cell):
            delta: dict[str, Any] = {"dimension": dimension, "value": value, "start": start}
            delta.update((f, x) for f, x in zip(FIELDS, cell, strict=True) if x)
            out.append(delta)
    return out


def count(routed: dict[str, Any], state: State) -> list[dict[str, Any]]:
    """Fold a clean event into its rating / case (state keyed by the ingest key = the entity key); returns the
    cell deltas and a dead letter per newly quarantined duration (``reason``). A repeated event changes nothing."""
    record = routed["record"]
    if routed["schema"] == "feedback_event":
        name = "r" + record["rating_id"]
        old_rating = _rating_from(state.get(name))
        rating = newer_rating(old_rating, rating_state(record))
        if rating is old_rating:
            return []
        state.set(name, _rating_to(rating))
        old = rating_contribution(old_rating, DIMENSIONS, WINDOW_MS) if old_rating is not None else ()
        return _deltas(old, rating_contribution(rating, DIMENSIONS, WINDOW_MS))
    name = "c" + record["ticket_id"]
    old_case = _case_from(state.get(name))
    case = apply_ticket_event(old_case, record)
    if case is old_case:
        return []
    state.set(name, _case_to(case))
    old, old_quarantine = (case_contribution(old_case, DIMENSIONS, WINDOW_MS, RULES) if old_case is not None
                           else ((), frozenset()))
    new, quarantine = case_contribution(case, DIMENSIONS, WINDOW_MS, RULES)
    out = _deltas(old, new)
    for reason in sorted(quarantine - old_quarantine):
        out.append(_dead_letter(reason, f"{reason}: created_at={case.created_at} first_response_at="
                                f"{case.first_response_at} resolved_at={case.resolved_at} (ms); not counted",
                                "window", orjson.dumps(record)))
    return out


def add_delta(agg: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    for f in FIELDS:
        x = delta.get(f)
        if x:
            agg[f] += x
    return agg


def first_delta(delta: dict[str, Any]) -> dict[str, Any]:
    return {"dimension": delta["dimension"], "value": delta["value"], **{f: delta.get(f, 0) for f in FIELDS}}


def window_record(window: dict[str, Any]) -> dict[str, Any]:
    """A closed window as a metrics record (the scalar fields of schemas/window_metric.avsc)."""
    agg = window["value"]
    rated, scored, fr, res = agg["rated"], agg["scored"], agg["first_responses"], agg["resolved"]
    out = {"window_start": window["start"], "window_seconds": WINDOW_MS // 1000, "dimension": agg["dimension"],
           "dimension_value": agg["value"], "is_final": True, "emitted_at": int(time.time() * 1000)}
    out.update((f, agg[f]) for f in FIELDS)
    out.update(csat_percent=100.0 * agg["satisfied"] / rated if rated else None,
               average_score=agg["score_micros"] / 1e6 / scored if scored else None,
               first_response_mean_seconds=agg["first_response_ms"] / 1000 / fr if fr else None,
               resolution_mean_seconds=agg["resolution_ms"] / 1000 / res if res else None)
    return out


def job(app: Application, grace_ms: int) -> None:
    ingest = os.environ["BENCH_TOPIC"]
    namespace = ingest.removesuffix(".ingest.v1")
    config = TopicConfig(num_partitions=int(os.environ["BENCH_PARTITIONS"]), replication_factor=1)

    def output(name: str) -> Any:
        return app.topic(f"{namespace}.quix.{name}.v1", key_serializer="str", value_serializer="json", config=config)

    clean_topic, dead_topic, windows_topic = output("clean"), output("deadletter"), output("windows")
    sdf = app.dataframe(app.topic(ingest, value_deserializer="bytes"))

    # 1. clean: every input goes to the clean topic or, with its reason, to the dead-letter topic
    sdf = sdf.apply(route)
    sdf = sdf.to_topic(lambda value, key, timestamp, headers: dead_topic if "reason" in value else clean_topic,
                       key=lambda value: value.get("key") or f"{value['origin_topic']}/{value['origin_partition']}"
                                                              f"/{value['origin_offset']}")
    sdf = sdf.filter(lambda value: "reason" not in value)

    # 2. per-entity state -> deltas per window cell (+ dead letters of quarantined durations: a branch)
    changes = sdf.apply(count, stateful=True, expand=True)
    changes.filter(lambda item: "reason" in item).to_topic(
        dead_topic, key=lambda value: f"{value['origin_topic']}/{value['origin_partition']}/{value['origin_offset']}")
    cells = changes.filter(lambda item: "reason" not in item)

    # 3. 1-minute windows per cell, summed; closed windows to the windows topic
    cells = cells.group_by(lambda delta: f"{delta['dimension']}|{delta['value']}", name="cell")
    cells = cells.set_timestamp(lambda value, key, timestamp, headers: value["start"])
    windows = cells.tumbling_window(WINDOW_MS, grace_ms=grace_ms).reduce(add_delta, first_delta).final()
    windows = windows.apply(window_record)
    windows.to_topic(windows_topic, key=lambda value: f"{value['dimension']}|{value['dimension_value']}|"
                                                      f"{value['window_start']}|{value['window_seconds']}")


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "light"
    if which not in ("light", "job"):
        raise SystemExit(f"usage: quix_app.py light|job (got {which!r})")
    app = Application(
        broker_address=os.environ["BENCH_BOOTSTRAP"],
        consumer_group=os.environ["BENCH_GROUP"],
        auto_offset_reset="earliest",
        commit_interval=1.0,  # same commit cadence as our worker (the Quix default is 5 s)
        state_dir=os.environ["BENCH_DATADIR"],
    )
    # the input is shuffled over hours of event time, so run.py passes a grace period that keeps every window
    # open (ours gets the same); with grace 0 Quix drops and logs nearly every event as late
    grace_ms = int(os.environ["BENCH_GRACE_MS"])
    (job if which == "job" else light)(app, grace_ms)
    app.run()


if __name__ == "__main__":
    main()
