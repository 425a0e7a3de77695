"""``satpulse`` command line: services, topics, worker, publish, import, channel, ingest-service, report,
retention, migrate, dashboard, dead-letters, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dashboard import DEFAULT_PORT
from domain.entities import DIMENSION_FIELDS

if TYPE_CHECKING:
    from sinks.clickhouse import ClickHouse


def _cmd_services(args: argparse.Namespace) -> int:
    from devtools import services

    return services.main(args.rest)


def _cmd_topics(args: argparse.Namespace) -> int:
    from adapters.publisher import ensure_topics
    from satpulse.settings import get_settings

    ensure_topics(get_settings())
    print("topics ready")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    if args.stages:
        os.environ["SATPULSE_WORKER_STAGES"] = json.dumps(args.stages.split(","))
    if args.until_caught_up:
        os.environ["SATPULSE_WORKER_UNTIL_CAUGHT_UP"] = "true"
    from sinks.migrations import MigrationRequired
    from streams.app import run_worker

    try:
        run_worker(_LOG_LEVELS.get(args.loglevel, args.loglevel.upper()))
    except MigrationRequired as exc:
        print(f"satpulse worker: {exc}", file=sys.stderr)
        return 2
    return 0


_LOG_LEVELS = {"crit": "CRITICAL", "warn": "WARNING"}  # short names accepted by --loglevel


def _cmd_publish(args: argparse.Namespace) -> int:
    from adapters.jsonl import publish_jsonl
    from adapters.privacy import PrivacyPolicy
    from adapters.publisher import Publisher, ensure_topics
    from satpulse.settings import get_settings

    settings = get_settings()
    privacy = PrivacyPolicy(settings.redact_personal_data, settings.pseudonymisation_key)
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        summary = publish_jsonl(Path(args.file), publisher, privacy)
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejected.items())) or "none"
    print(f"lines read {summary.lines}, published {summary.published}, rejected: {rejected}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from adapters.importer import Progress, run_import
    from adapters.mapping import MappingError, load_mapping
    from adapters.privacy import PrivacyPolicy
    from satpulse import topics
    from satpulse.settings import get_settings

    settings = get_settings()
    path = Path(args.file)
    privacy = PrivacyPolicy(settings.redact_personal_data, settings.pseudonymisation_key)
    try:
        mapping = load_mapping(Path(args.mapping))
        progress = Progress(path.stat().st_size, enabled=not args.no_progress)
        if args.dry_run:
            def show(topic: str, key: bytes | None, value: bytes) -> None:
                if topic == topics.INGEST:
                    sys.stdout.write(value.decode() + "\n")

            report = run_import(path, mapping, show, privacy, progress=progress,
                                future_tolerance_ms=settings.future_tolerance_seconds * 1000)
            print(report.normalised_channels() + report.summary(), file=sys.stderr)
            return 0
        from adapters.publisher import Publisher, ensure_topics

        ensure_topics(settings)
        with Publisher(settings) as publisher:
            report = run_import(path, mapping, publisher.send, privacy, progress=progress,
                                future_tolerance_ms=settings.future_tolerance_seconds * 1000)
    except (MappingError, OSError) as exc:
        print(f"satpulse import: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _cmd_channel(args: argparse.Namespace) -> int:
    from collections import Counter

    from adapters.channels import emit_outcome, read_channel_file
    from adapters.emit import Emitter, IngestEncoder, Send
    from adapters.privacy import PrivacyPolicy
    from satpulse import topics
    from satpulse.settings import get_settings

    settings = get_settings()
    if args.kind == "imap":
        from adapters.imap import run_imap

        return run_imap(settings, once=args.once, dry_run=args.dry_run)
    if not args.files:
        print(f"satpulse channel {args.kind}: at least one FILE is required", file=sys.stderr)
        return 2
    privacy = PrivacyPolicy(settings.redact_personal_data, settings.pseudonymisation_key)
    counts: Counter[str] = Counter()
    stage = f"channel-{args.kind}"

    def run(send: Send) -> None:
        emitter = Emitter(stage, send, IngestEncoder(privacy))
        for path in args.files:
            for outcome in read_channel_file(args.kind, Path(path)):
                emit_outcome(outcome, emitter, counts)

    if args.dry_run:
        def show(topic: str, key: bytes | None, value: bytes) -> None:
            if topic == topics.INGEST:
                sys.stdout.write(value.decode() + "\n")
        run(show)
        print(f"records {counts['records']}, events {counts['events']}, rejected {counts['rejected']}",
              file=sys.stderr)
        return 0
    from adapters.publisher import Publisher, ensure_topics

    ensure_topics(settings)
    with Publisher(settings) as publisher:
        run(publisher.send)
    print(f"records {counts['records']}, events published {counts['events']}, rejected {counts['rejected']}")
    return 0


def _cmd_ingest_service(args: argparse.Namespace) -> int:
    from adapters.service import run_service
    from satpulse.settings import get_settings

    settings = get_settings()
    updates = {k: v for k, v in (("ingest_host", args.host), ("ingest_port", args.port)) if v is not None}
    run_service(settings.model_copy(update=updates))
    return 0


def _parse_time(text: str) -> int:
    from domain.clean import parse_event_time

    return parse_event_time(text) // 1000


def _cmd_report(args: argparse.Namespace) -> int:
    from satpulse.settings import get_settings
    from sinks.clickhouse import connect_configured
    from sinks.report import build_report, render

    settings = get_settings()
    ch = connect_configured(settings, args.url)
    try:
        report = build_report(ch, args.by, args.window, settings.window_seconds, _parse_time(args.from_),
                              _parse_time(args.to), settings.rollup_window_seconds, args.compare)
    except ValueError as exc:  # a time that does not parse, a comparison reaching before 1970
        print(f"satpulse report: {exc}", file=sys.stderr)
        return 2
    finally:
        ch.close()
    sys.stdout.write(render(report, args.format))
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from satpulse.settings import get_settings
    from sinks.clickhouse import connect_configured
    from sinks.mutations import wait_for_mutations
    from sinks.retention import apply_retention

    settings = get_settings()
    ch = connect_configured(settings, args.url)
    try:
        steps = apply_retention(ch, settings, int(time.time()), dry_run=args.dry_run)
        for s in steps:
            what = "scheduled" if s.scheduled else ("dry run" if s.rows else "nothing to delete")
            print(f"{s.kind:<13} {s.table:<16} {s.rows:>10} rows before "
                  f"{datetime.fromtimestamp(s.cutoff, UTC).isoformat()}  {what}")
        if not steps:
            print("no retention configured (SATPULSE_RETENTION_*_DAYS are 0): nothing deleted")
        if args.wait and any(s.scheduled for s in steps) and not wait_for_mutations(ch, args.wait):
            print(f"satpulse retention: mutations still running after {args.wait:.0f}s", file=sys.stderr)
            return 1
    finally:
        ch.close()
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from satpulse.settings import get_settings
    from sinks.clickhouse import connect_configured
    from sinks.migrations import describe, migrate

    settings = get_settings()
    ch = connect_configured(settings, args.url)
    try:
        applied = migrate(ch, rebuild=True)
    finally:
        ch.close()
    for version in applied:
        print(f"applied migration {version}: {describe(version)}")
    if not applied:
        print("schema up to date: no migration pending")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from dashboard.web import serve
    from satpulse.settings import get_settings

    settings = get_settings()
    if args.url:
        settings = settings.model_copy(update={"clickhouse_url": SecretStr(args.url)})
    serve(settings, args.host, args.port)
    return 0


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    from satpulse.settings import get_settings
    from sinks import dead_letter_tools as tools
    from sinks.clickhouse import connect_configured

    settings = get_settings()
    try:
        since = _parse_time(args.since) if getattr(args, "since", None) else 0
    except ValueError as exc:
        print(f"satpulse dead-letters: --since: {exc}", file=sys.stderr)
        return 2
    ch = connect_configured(settings, args.url)
    try:
        if args.action == "summary":
            sys.stdout.write(tools.format_summary(tools.summary(ch, since), since))
            return 0
        if args.action == "show":
            letters = tools.find(ch, [args.origin])
            if not letters:
                print(f"satpulse dead-letters: no dead letter with origin {args.origin!r}", file=sys.stderr)
                return 1
            sys.stdout.write("\n".join(map(tools.format_letter, letters)))
            return 0
        return _replay_dead_letters(args, ch, since)
    finally:
        ch.close()


def _replay_dead_letters(args: argparse.Namespace, ch: ClickHouse, since: int) -> int:
    from adapters.dead_letter_replay import plan_replay, send_replay
    from adapters.publisher import Publisher
    from satpulse import topics
    from satpulse.settings import get_settings
    from sinks.dead_letter_tools import find

    letters = find(ch, args.origin or (), exact=False, reason=args.reason, stage=args.stage, since_s=since)
    plan = plan_replay(letters, again=args.again)
    if plan.send and not args.dry_run:
        with Publisher(get_settings()) as publisher:
            send_replay(plan, publisher, ch, topics.INGEST)
    sys.stdout.write(plan.describe(topics.INGEST, args.dry_run))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from devtools.demo import run_demo

    return run_demo(args.events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="satpulse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("services", help="start/stop/inspect local Kafka, ClickHouse, Prometheus, Alertmanager "
                                        "(--cluster: 3 Kafka brokers and replicated ClickHouse)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_services)
    p = sub.add_parser("topics", help="create the pipeline's Kafka topics")
    p.set_defaults(func=_cmd_topics)
    p = sub.add_parser("worker", help="run the worker (cleaning, windows, sinks, /metrics)")
    p.add_argument("--loglevel", default=os.environ.get("SATPULSE_LOGLEVEL", "warn"))
    p.add_argument("--stages", help="comma-separated subset of clean,window,dead_letters (default: all)")
    p.add_argument("--until-caught-up", action="store_true",
                   help="backfill: exit 0 with a summary once every input partition is processed up to its end "
                        "offset at start and stored")
    p.set_defaults(func=_cmd_worker)
    p = sub.add_parser("publish", help="publish a JSONL file of raw submissions to the ingest topic")
    p.add_argument("file")
    p.set_defaults(func=_cmd_publish)
    p = sub.add_parser("import", help="import a historical CSV/JSONL export with a declarative YAML mapping "
                                      "(docs/adapters.md)")
    p.add_argument("file")
    p.add_argument("--mapping", required=True, help="mapping YAML (see mappings/)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the submissions as JSON lines instead of publishing; each raw channel with what "
                        "it becomes (channel: Inbound -> other) and the summary on stderr")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_cmd_import)
    p = sub.add_parser("channel", help="publish IVR survey records, e-mail survey replies (.eml files, or an "
                                       "IMAP mailbox polled on an interval), chat transcripts or social mentions "
                                       "(docs/adapters.md)")
    p.add_argument("kind", choices=["ivr", "email", "chat", "social", "imap"])
    p.add_argument("files", nargs="*", help="input files (not for imap: SATPULSE_IMAP_* settings)")
    p.add_argument("--dry-run", action="store_true", help="print the submissions as JSON lines")
    p.add_argument("--once", action="store_true", help="imap: poll once and exit")
    p.set_defaults(func=_cmd_channel)
    p = sub.add_parser("ingest-service", help="HTTP webhook ingestion service (Zendesk, Freshdesk, Intercom, "
                                              "Help Scout, Chatwoot, generic) with /health and /metrics")
    p.add_argument("--host", default=None, help="default: SATPULSE_INGEST_HOST")
    p.add_argument("--port", type=int, default=None, help="default: SATPULSE_INGEST_PORT")
    p.set_defaults(func=_cmd_ingest_service)
    p = sub.add_parser("report", help="CSAT, scores, response/resolution times, SLA breaches, volume and seed "
                                      "metrics from ClickHouse")
    p.add_argument("--from", dest="from_", default="1970-01-01T00:00:00Z", help="ISO time or epoch (inclusive)")
    p.add_argument("--to", default="2100-01-01T00:00:00Z", help="ISO time or epoch (exclusive)")
    p.add_argument("--by", default="channel",
                   choices=["all", *DIMENSION_FIELDS])
    p.add_argument("--window", default="1h", choices=["1m", "1h", "1d", "all"],
                   help="window size, or all: one row per value for the whole [--from, --to)")
    p.add_argument("--format", default="table", choices=["table", "json", "jsonl", "csv"],
                   help="table (with a total row), json (one document: parameters, rows, total), jsonl (one "
                        "row per line), csv")
    p.add_argument("--compare", choices=["previous", "last-week"],
                   help="add each row's CSAT over the previous window (all: the previous range of equal length) "
                        "or one week earlier, and the delta in percentage points")
    p.add_argument("--url", help="ClickHouse URL (default: SATPULSE_CLICKHOUSE_URL)")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("retention", help="delete ClickHouse rows older than SATPULSE_RETENTION_*_DAYS "
                                         "(ALTER TABLE ... DELETE mutations; run daily, docs/operations.md)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the mutations to finish")
    p.add_argument("--url", help="ClickHouse URL (default: SATPULSE_CLICKHOUSE_URL)")
    p.set_defaults(func=_cmd_retention)
    p = sub.add_parser("migrate", help="apply every pending ClickHouse migration, including ones that rebuild a "
                                       "table: stop all workers first (docs/operations.md#upgrades)")
    p.add_argument("--url", help="ClickHouse URL (default: SATPULSE_CLICKHOUSE_URL)")
    p.set_defaults(func=_cmd_migrate)
    p = sub.add_parser("dashboard", help="serve the live dashboard page against a ClickHouse server (with chDB "
                                         "the worker serves it on its web port: /dashboard)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--url", help="ClickHouse URL (default: SATPULSE_CLICKHOUSE_URL)")
    p.set_defaults(func=_cmd_dashboard)
    p = sub.add_parser("dead-letters", help="dead letters stored in ClickHouse: summary, show one, replay to the "
                                            "ingest topic after a fix (docs/dead-letters.md#tools)")
    p.set_defaults(func=_cmd_dead_letters)
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("summary", help="counts by stage and reason (truncated, replayed) and by origin")
    a.add_argument("--since", help="ISO time or epoch: dead letters that failed at or after it")
    a.add_argument("--url", help="ClickHouse URL (default: SATPULSE_CLICKHOUSE_URL)")
    a = actions.add_parser("show", help="one origin's dead letters with payload, size and sha256")
    a.add_argument("origin", help="topic/partition/offset or a reference such as path:line")
    a.add_argument("--url", help="ClickHouse URL (default: SATPULSE_CLICKHOUSE_URL)")
    a = actions.add_parser("replay", help="re-send clean-stage dead letters' payloads to the ingest topic, each "
                                          "origin once (skips truncated payloads; --again: replayed ones too)")
    a.add_argument("--reason", help="only this reason")
    a.add_argument("--stage", help="only this stage (replayable: cleaner)")
    a.add_argument("--origin", action="append", help="only this origin, topic or file (repeatable)")
    a.add_argument("--since", help="ISO time or epoch: dead letters that failed at or after it")
    a.add_argument("--again", action="store_true", help="also origins replayed before")
    a.add_argument("--dry-run", action="store_true", help="only list what would be sent and skipped")
    a.add_argument("--url", help="ClickHouse URL (default: SATPULSE_CLICKHOUSE_URL)")
    p = sub.add_parser("demo", help="end to end on this machine: local Kafka, embedded ClickHouse, sample "
                                    "traffic, worker, report and metrics")
    p.add_argument("--events", type=int, default=5000)
    p.set_defaults(func=_cmd_demo)
    args, unparsed = parser.parse_known_args(argv)
    if args.command == "services":  # its options (--cluster, --help, ...) belong to devtools.services.main
        args.rest = unparsed + args.rest
    elif unparsed:
        parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
