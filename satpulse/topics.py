"""The one place that names Kafka topics. Every producer and consumer imports its topic from here.

Names are ``{namespace}.{topic}.v{n}``; the namespace is the ``topic_namespace`` setting (default
``satpulse``), so that tests and demos can run in isolation on one broker.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from satpulse.settings import get_settings


@dataclass(frozen=True, slots=True)
class Topics:
    # raw submissions from channel adapters: JSON objects (docs/ingest-format.md), key = ticket id or event id
    ingest: str
    # cleaned, normalised feedback events: Avro single-object encoding, schemas/feedback_event.avsc, key = rating_id
    feedback: str
    # cleaned support-case lifecycle events: Avro single-object, schemas/ticket_event.avsc, key = ticket_id
    tickets: str
    # window results, current (is_final false) and final, every publish_interval_seconds: Avro single-object,
    # schemas/window_metric.avsc, key = dimension|value|start|size
    metrics: str
    # clean events that arrived after their window was final (applied as corrections): the clean Avro payload
    late: str
    # inputs that could not be processed, with reason and origin: Avro single-object, schemas/dead_letter.avsc
    dead_letter: str

    def all(self) -> tuple[str, ...]:
        return astuple(self)


def for_namespace(namespace: str) -> Topics:
    return Topics(
        ingest=f"{namespace}.ingest.v1",
        feedback=f"{namespace}.feedback.v1",
        tickets=f"{namespace}.tickets.v1",
        metrics=f"{namespace}.metrics.window.v1",
        late=f"{namespace}.late.v1",
        dead_letter=f"{namespace}.deadletter.v1",
    )


_current = for_namespace(get_settings().topic_namespace)
INGEST = _current.ingest
FEEDBACK = _current.feedback
TICKETS = _current.tickets
METRICS = _current.metrics
LATE = _current.late
DEAD_LETTER = _current.dead_letter
ALL_TOPICS: tuple[str, ...] = _current.all()
