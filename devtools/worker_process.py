"""Run ``satpulse worker`` as a child process (demo and end-to-end tests) and read its /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SATPULSE_WORKER = ("-m", "satpulse.cli", "worker")
FAUST_WORKER = ("-m", "faust", "-A", "streams.app", "worker")  # the same app through Faust's own CLI


class WorkerProcess:
    """A worker child (``satpulse worker``, or ``command``: arguments of this interpreter). ``start`` blocks
    until /metrics answers (raises TimeoutError)."""

    def __init__(self, env: Mapping[str, str], log_path: Path, web_port: int,
                 command: Sequence[str] = SATPULSE_WORKER) -> None:
        self.command = [sys.executable, *command]
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.web_port = web_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.scrape()
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"worker /metrics did not answer in {timeout}s; see {self.log_path}")

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample on /metrics as {(name, sorted labels): value}. Raises OSError if unreachable."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def describe(self, lines: int = 40) -> str:
        """Whether the child runs (or its exit code) and the last ``lines`` lines of its log: for the message of
        a test that waited for it in vain."""
        state = "not started" if self.proc is None else (
            "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}")
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            tail = []
        return "\n".join([f"worker {state}; the end of {self.log_path}:", *tail])

    def stop(self, kill: bool = False, timeout: float = 30.0) -> None:
        """SIGTERM (or SIGKILL with ``kill``) and wait; escalates to SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def metric_sum(samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
               **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def committed_lag(bootstrap: str, group: str, topic_names: list[str]) -> int:
    """Messages in ``topic_names`` not yet committed by consumer group ``group`` (every partition)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(t, p) for t in topic_names for p in consumer.partitions_for_topic(t) or ()]
        ends = consumer.end_offsets(partitions)
        committed = admin.list_group_offsets(group).get(group, {})
        return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())
    finally:
        consumer.close()
        admin.close()


def wait_consumed(bootstrap: str, group: str, topic_names: list[str], timeout: float,
                  workers: Sequence[WorkerProcess] = ()) -> None:
    """Block until the group has committed every message of the topics. Raises TimeoutError, whose message
    describes ``workers`` (the group's worker children)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if committed_lag(bootstrap, group, topic_names) == 0:
            return
        time.sleep(1)
    raise TimeoutError("\n".join([f"group {group} still lags {committed_lag(bootstrap, group, topic_names)} messages",
                                   *(w.describe() for w in workers)]))


def read_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record (kafka-python ConsumerRecord) on ``topic`` from the beginning to its end offsets at the call,
    no waiting: call it after the producers flushed (acks=all)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1_000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
