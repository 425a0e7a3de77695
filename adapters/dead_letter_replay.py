"""``satpulse dead-letters replay``: stored dead letters re-sent to the ingest topic after a fix (a setting, a
scale, a limit), as an adapter publishes: the payload byte for byte, keyed by the entity key of the submission
(:func:`domain.clean.entity_key`), acks=all through :class:`adapters.publisher.Publisher`.

What is replayable: a dead letter of the clean stage (its payload is a raw submission as it was on the ingest
topic) whose payload was kept whole and is a JSON object. Everything else is skipped and reported: other stages
carry something else (an import's source row, a window stage's clean Avro event, a line that is not JSON; fix an
import's mapping and import the file again: its event ids are stable), a truncated payload cannot be rebuilt,
and bytes that are no JSON object would fail again the same way.

Idempotent by origin: an origin already replayed (``dead_letter_replays``) is skipped unless asked ``again``, and
one origin is sent once per run. Counting is idempotent anyway: the replayed submission is cleaned into an event
with the same event id, which the window stage does not count twice (domain/entities.py); the record keeps a
second replay from even reaching the topic. A replay is recorded only after the broker acknowledged it, so a
crash in between sends that chunk again on the next run (harmless, as above).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from adapters.publisher import Publisher
from domain.clean import entity_key
from sinks.clickhouse import ClickHouse
from sinks.dead_letter_tools import DeadLetter, record_replays

REPLAYABLE_STAGES = ("cleaner",)  # stages whose dead letters carry the raw submission from the ingest topic
CHUNK = 1000  # messages acknowledged and recorded together


@dataclass
class ReplayPlan:
    """The selected dead letters sorted by what replay does with them; ``send`` holds (letter, key) pairs."""

    send: list[tuple[DeadLetter, bytes | None]] = field(default_factory=list)
    already_replayed: list[DeadLetter] = field(default_factory=list)
    truncated: list[DeadLetter] = field(default_factory=list)
    other_stage: list[DeadLetter] = field(default_factory=list)
    not_a_submission: list[DeadLetter] = field(default_factory=list)  # payload is no JSON object
    duplicate_origin: int = 0  # further dead letters of an origin already in the plan

    def describe(self, ingest_topic: str, dry_run: bool) -> str:
        """What was (``dry_run``: would be) sent and skipped, one line per letter sent or not replayable, then
        the counts. Pure."""
        verb = "would send" if dry_run else "sent"
        lines = [f"{verb} {letter.origin} ({letter.stage} {letter.reason}, {letter.payload_size} bytes, key "
                 f"{key.decode() if key is not None else '-'})" for letter, key in self.send]
        lines += [f"skipped {letter.origin}: truncated at capture ({len(letter.payload)} of {letter.payload_size} "
                  "bytes kept)" for letter in self.truncated]
        lines += [f"skipped {letter.origin}: the payload is no JSON object" for letter in self.not_a_submission]
        lines += [f"skipped {letter.origin}: stage {letter.stage} does not keep a raw submission"
                  for letter in self.other_stage]
        lines.append(f"{verb} {len(self.send)} to {ingest_topic}; skipped: already replayed "
                     f"{len(self.already_replayed)} (--again sends them), truncated {len(self.truncated)}, "
                     f"not a JSON object {len(self.not_a_submission)}, other stage {len(self.other_stage)}"
                     + (f", same origin {self.duplicate_origin}" if self.duplicate_origin else ""))
        return "".join(line + "\n" for line in lines)


def plan_replay(letters: Iterable[DeadLetter], again: bool = False) -> ReplayPlan:
    """What replaying ``letters`` does with each of them (``again``: send origins already replayed too). Pure."""
    plan = ReplayPlan()
    seen: set[tuple[str, int, int, str]] = set()
    for letter in letters:
        if letter.origin_key in seen:
            plan.duplicate_origin += 1
            continue
        seen.add(letter.origin_key)
        if letter.stage not in REPLAYABLE_STAGES:
            plan.other_stage.append(letter)
        elif letter.truncated:
            plan.truncated.append(letter)
        elif (submission := _submission(letter.payload)) is None:
            plan.not_a_submission.append(letter)
        elif letter.replayed_at is not None and not again:
            plan.already_replayed.append(letter)
        else:
            key = entity_key(submission)
            plan.send.append((letter, None if key is None else key.encode()))
    return plan


def _submission(payload: bytes) -> dict[str, object] | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def send_replay(plan: ReplayPlan, publisher: Publisher, ch: ClickHouse, ingest_topic: str) -> int:
    """Send the payloads of ``plan.send`` to ``ingest_topic`` and record each chunk of CHUNK once the broker
    acknowledged it; returns how many were sent. Blocks; raises PublishError or KafkaError (the chunk is not
    recorded: the next run sends it again) and ClickHouseError."""
    for start in range(0, len(plan.send), CHUNK):
        chunk = plan.send[start:start + CHUNK]
        for letter, key in chunk:
            publisher.send(ingest_topic, key, letter.payload)
        publisher.flush()
        record_replays(ch, [letter for letter, _ in chunk], ingest_topic)
    return len(plan.send)
