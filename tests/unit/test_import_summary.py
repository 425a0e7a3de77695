"""``satpulse import`` tells what a mapping leaves unmapped: the summary lists the raw channels the pipeline
counts as ``other`` and the rating scales refused as unknown, with their numbers of events, and ``--dry-run``
shows each raw channel next to what it becomes. A small CSV with the shipped Kaggle mapping."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.importer import run_import
from adapters.mapping import load_mapping, parse_mapping
from satpulse import cli

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "mappings" / "kaggle_support_tickets.yaml"
NOW_MS = 1_900_000_000_000
HEADER = ["Ticket ID", "Customer Email", "Product Purchased", "Ticket Type", "Ticket Priority", "Ticket Channel",
          "First Response Time", "Time to Resolution", "Customer Satisfaction Rating"]
CHANNELS = ["Inbound", "Outcall", "Inbound", "Email", "Social media", "other", "Web Chat"]  # one row each


def write_csv(tmp_path: Path) -> Path:
    """One closed, rated ticket per channel of CHANNELS: a first response, a resolution and a rating each."""
    path = tmp_path / "tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i, channel in enumerate(CHANNELS, start=1):
            writer.writerow([str(i), f"c{i}@example.com", "GoPro", "Refund request", "High", channel,
                             "2023-06-01 10:00:00", "2023-06-01 12:00:00", "4.0"])
    return path


def test_summary_lists_channels_counted_as_other(tmp_path: Path) -> None:
    sent: list[tuple[str, bytes | None, bytes]] = []
    report = run_import(write_csv(tmp_path), load_mapping(MAPPING), lambda t, k, v: sent.append((t, k, v)),
                        now_ms=NOW_MS, ingest_topic="in", dead_letter_topic="dead")
    assert report.published == 3 * len(CHANNELS) and report.rejected_events == {}
    assert report.channels_to_other() == {"Inbound": 6, "Outcall": 3}  # "other" itself is no surprise
    assert "channels counted as other: Inbound 6, Outcall 3\n" in report.summary()
    assert report.summary().endswith("unknown rating scales: none")
    assert report.normalised_channels().splitlines() == [
        "channel: Inbound -> other (6 events)", "channel: Outcall -> other (3 events)",
        "channel: Web Chat -> chat (3 events)", "channel: email -> email (3 events)",
        "channel: other -> other (3 events)", "channel: social -> social (3 events)"]
    # the submissions keep the raw name (the cleaner normalises it): the mapping maps Email and Social media only
    assert {json.loads(v)["channel"] for t, _, v in sent if t == "in"} == {
        "Inbound", "Outcall", "email", "social", "other", "Web Chat"}


def test_summary_lists_scales_refused_as_unknown(tmp_path: Path) -> None:
    doc: dict[str, Any] = yaml.safe_load(MAPPING.read_text(encoding="utf-8"))
    doc["events"][2]["rating"]["scale"] = "stars"  # a mapping naming a scale the pipeline does not know
    report = run_import(write_csv(tmp_path), parse_mapping(doc), lambda t, k, v: None, now_ms=NOW_MS)
    assert report.unknown_scales == {"stars": len(CHANNELS)}
    assert report.rejected_events == {"unknown_scale": len(CHANNELS)}
    assert report.summary().endswith(f"unknown rating scales: stars {len(CHANNELS)}")


def test_dry_run_shows_raw_and_normalised_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["import", str(write_csv(tmp_path)), "--mapping", str(MAPPING), "--dry-run",
                     "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 * len(CHANNELS)  # the submissions, as JSON lines
    assert "channel: Inbound -> other (6 events)\n" in err and "channel: Web Chat -> chat (3 events)\n" in err
    assert "channels counted as other: Inbound 6, Outcall 3\n" in err
