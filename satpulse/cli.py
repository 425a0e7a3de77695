"""``satpulse`` command line: services, topics, worker, publish, demo."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _cmd_services(args: argparse.Namespace) -> int:
    from satpulse import services

    return services.main(args.rest)


def _cmd_topics(args: argparse.Namespace) -> int:
    from adapters.publisher import ensure_topics
    from satpulse.settings import get_settings

    ensure_topics(get_settings())
    print("topics ready")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from streams.app import app

    sys.argv = [sys.argv[0], "worker", "--loglevel", args.loglevel]
    app.main()
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from adapters.jsonl import publish_jsonl
    from adapters.publisher import Publisher, ensure_topics
    from satpulse.settings import get_settings

    settings = get_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        summary = publish_jsonl(Path(args.file), publisher)
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejected.items())) or "none"
    print(f"lines read {summary.lines}, published {summary.published}, rejected: {rejected}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from satpulse.demo import run_demo

    return run_demo(args.events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="satpulse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("services", help="start/stop/inspect local Kafka, ClickHouse, Prometheus, Alertmanager",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_services)
    p = sub.add_parser("topics", help="create the pipeline's Kafka topics")
    p.set_defaults(func=_cmd_topics)
    p = sub.add_parser("worker", help="run the Faust worker (cleaning, windows, sinks, /metrics)")
    p.add_argument("--loglevel", default=os.environ.get("SATPULSE_LOGLEVEL", "warn"))
    p.set_defaults(func=_cmd_worker)
    p = sub.add_parser("publish", help="publish a JSONL file of raw submissions to the ingest topic")
    p.add_argument("file")
    p.set_defaults(func=_cmd_publish)
    p = sub.add_parser("demo", help="end to end on this machine: local Kafka, embedded ClickHouse, sample "
                                    "traffic, worker, report and metrics")
    p.add_argument("--events", type=int, default=5000)
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
