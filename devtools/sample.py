"""Sample traffic: deterministic raw feedback submissions for demos and tests (seeded)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# (source, channel as the source spells it, scale, values the source sends)
_SHAPES: tuple[tuple[str, str, str, tuple[Any, ...]], ...] = (
    ("ivr", "Phone", "1-5", (1, 2, 3, 4, 5, "4.0")),
    ("zendesk", "E-mail", "good_bad", ("good", "bad")),
    ("freshdesk", "email", "freshdesk", (-103, -102, -101, 100, 101, 102, 103)),
    ("helpscout", "Live chat", "helpscout", ("great", "okay", "not good")),
    ("survey", "web survey", "0-10", tuple(range(11))),
    ("social", "Social media", "label5", ("terrible", "bad", "okay", "good", "amazing")),
)
_TEAMS = ("billing", "tech", "onboarding")


def sample_submissions(count: int, start_ms: int, span_ms: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``count`` raw feedback submissions with event times spread over [start_ms, start_ms + span_ms)."""
    rng = random.Random(seed)
    for i in range(count):
        source, channel, scale, values = _SHAPES[rng.randrange(len(_SHAPES))]
        yield {
            "kind": "feedback", "event_id": f"sample-{seed}-{i}", "source": source, "channel": channel,
            "event_time": start_ms + rng.randrange(span_ms), "ticket_id": f"T{rng.randrange(count // 3 + 1)}",
            "team": rng.choice(_TEAMS), "rating_value": rng.choice(values), "rating_scale": scale,
            "comment": rng.choice((None, "thanks", "too slow", "call me at +41 44 123 45 67")),
        }


def write_jsonl(path: Path, submissions: Iterator[dict[str, Any]], bad_lines: tuple[str, ...] = ()) -> int:
    """Write submissions (and the given malformed lines, spread through the file); returns lines written."""
    written = 0
    bad = list(bad_lines)
    with path.open("w") as out:
        for i, submission in enumerate(submissions):
            if bad and i % 97 == 0:
                out.write(bad.pop() + "\n")
                written += 1
            out.write(json.dumps(submission) + "\n")
            written += 1
        for line in bad:
            out.write(line + "\n")
            written += 1
    return written


def sample_ticket_events(cases: int, start_ms: int, span_ms: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Lifecycle events of ``cases`` support cases (created, first response, resolved; some reopened and
    resolved again), in shuffled order, all within [start_ms, start_ms + span_ms + 3 h)."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for case in range(cases):
        source, channel, _, _ = _SHAPES[rng.randrange(len(_SHAPES))]
        created = start_ms + rng.randrange(span_ms)
        steps = [("created", created), ("first_response", created + rng.randrange(30_000, 3_600_000)),
                 ("resolved", created + rng.randrange(3_600_000, 2 * 3_600_000))]
        if rng.random() < 0.1:
            steps += [("reopened", created + 2 * 3_600_000), ("resolved", created + 3 * 3_600_000)]
        common = {"kind": "ticket", "source": source, "channel": channel, "ticket_id": f"case-{seed}-{case}",
                  "team": rng.choice(_TEAMS), "priority": rng.choice(("low", "medium", "high", "urgent"))}
        events += [{**common, "event_id": f"case-{seed}-{case}-{i}", "status": status, "event_time": at}
                   for i, (status, at) in enumerate(steps)]
    rng.shuffle(events)
    yield from events
