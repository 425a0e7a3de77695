"""The summary ``satpulse worker --until-caught-up`` prints when a backfill is done, from the process's metrics."""

from __future__ import annotations

from satpulse import metrics


def _value(name: str, **labels: str) -> int:
    return int(metrics.REGISTRY.get_sample_value(name, labels) or 0)


def backfill_summary(elapsed_seconds: float) -> str:
    """Events read, clean events counted, dead letters by stage and reason, late events, and the time taken
    (since the worker started), as lines of text."""
    dead = sorted((s.labels["stage"], s.labels["reason"], int(s.value))
                  for family in metrics.DEAD_LETTERS.collect() for s in family.samples
                  if s.name.endswith("_total") and s.value)
    events = _value("satpulse_events_in_total", stage="cleaner")
    lines = [
        f"caught up in {elapsed_seconds:.1f} s",
        f"ingest records read: {events}",
        f"clean events counted: {_value('satpulse_events_in_total', stage='window')}",
        f"dead letters: {sum(n for _, _, n in dead)}",
        *(f"  {stage} {reason}: {n}" for stage, reason, n in dead),
        f"late events: {_value('satpulse_late_events_total')}",
    ]
    return "\n".join(lines) + "\n"
