"""End to end on real servers: worker -> Prometheus (scraping it every 1 s, rules every 1 s) -> Alertmanager ->
a webhook receiver run by this test. A stream whose CSAT drops raises SatpulseCsatLow with the right labels at the
webhook; it resolves when good feedback resumes; a low window below the minimum-responses guard and a good window
raise nothing.

The module starts its own Prometheus and Alertmanager (own work dir and ports, so a session-wide monitoring stack
with other settings is not disturbed) and loads a copy of config/prometheus/rules/ in which only the `for:` of
SatpulseCsatLow is shortened from 5m to 2s: everything else — expression, threshold, guard, labels,
annotations — is the production rule. Windows are 5 s (grace 1 s, idle 1 s) so that windows finalise quickly.
Every wait has a generous deadline; nothing asserts on timing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from adapters.publisher import Publisher, ensure_topics
from devtools import services as local_services
from devtools.services import CONFIG_DIR
from devtools.worker_process import WorkerProcess
from satpulse import topics
from satpulse.settings import Settings, get_settings
from tests.integration.offline import free_port

pytestmark = pytest.mark.integration

ALERT = "SatpulseCsatLow"
TEST_FOR = "2s"  # the production rule says 5m
CHANNEL = "chat"
T = TypeVar("T")



class Webhook:
    """An Alertmanager webhook receiver: an HTTP server on a free loopback port keeping every POSTed body."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        lock = threading.Lock()
        self._lock = lock
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        """Every alert of that name in every notification received so far, in arrival order."""
        with self._lock:
            return [a for post in self.posts for a in post.get("alerts", [])
                    if a.get("labels", {}).get("alertname") == alertname]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, expr: str) -> float | None:
        result = self.get("/api/v1/query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def alert_states(self, alertname: str) -> list[tuple[str, dict[str, str]]]:
        """(state, labels) of every pending or firing alert of that name."""
        return [(a["state"], a["labels"]) for a in self.get("/api/v1/alerts")["alerts"]
                if a["labels"].get("alertname") == alertname]

    def reload(self) -> None:
        request = urllib.request.Request(f"{self.base}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, log: Path | None = None) -> T:
    """Poll ``probe`` until it returns something truthy and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(0.5)


def rules_for_test(work: Path) -> Path:
    """A copy of the production rules with only SatpulseCsatLow's `for:` shortened (see the module docstring)."""
    target = work / "rules"
    target.mkdir(parents=True, exist_ok=True)
    changed = 0
    for path in sorted((CONFIG_DIR / "prometheus" / "rules").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == ALERT:
                    assert rule["for"] == "5m", "production `for:` changed: update this test and docs/alerts.md"
                    rule["for"] = TEST_FOR
                    changed += 1
        (target / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    assert changed == 1
    return target


@pytest.fixture(scope="module")
def stack(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Own Prometheus + Alertmanager posting to a webhook; yields ports and helpers. Needs Kafka (``services``)."""
    work = tmp_path_factory.mktemp("alerting")
    webhook = Webhook()
    worker_port = free_port()
    env = {
        "SATPULSE_WORK_DIR": str(work),
        "SATPULSE_PROMETHEUS_PORT": str(free_port()),
        "SATPULSE_ALERTMANAGER_PORT": str(free_port()),
        "SATPULSE_WORKER_WEB_PORT": str(worker_port),
        "SATPULSE_ALERT_WEBHOOK_URL": webhook.url,
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    get_settings.cache_clear()
    try:
        local_services.ensure_up(["prometheus", "alertmanager"])
        settings = get_settings()
        prometheus = Prometheus(settings.prometheus_port)
        # point the rendered config at the test copy of the rules and reload (--web.enable-lifecycle is on)
        config = work / "prometheus" / "prometheus.yml"
        production = str(CONFIG_DIR / "prometheus" / "rules")
        text = config.read_text()
        assert production in text
        config.write_text(text.replace(production, str(rules_for_test(work))))
        prometheus.reload()
        durations = {r.get("name"): r.get("duration") for g in prometheus.get("/api/v1/rules")["groups"]
                     for r in g["rules"]}
        assert durations[ALERT] == 2, durations
        yield {"settings": settings, "prometheus": prometheus, "webhook": webhook, "worker_port": worker_port,
               "work": work}
    finally:
        try:
            local_services.ensure_down(["prometheus", "alertmanager"])
        finally:
            patch.undo()
            get_settings.cache_clear()
            webhook.stop()


def _feedback(tag: str, rated: int, satisfied: int, event_time_ms: int) -> list[dict[str, Any]]:
    return [{"kind": "feedback", "event_id": f"{tag}-{i}", "source": "alert-test", "channel": "Live chat",
             "event_time": event_time_ms, "ticket_id": f"{tag}-{i}", "rating_value": 5 if i < satisfied else 1,
             "rating_scale": "1-5"} for i in range(rated)]


def test_csat_drop_alert_fires_and_resolves(stack: dict[str, Any], tmp_path: Path) -> None:
    settings: Settings = stack["settings"]
    prometheus: Prometheus = stack["prometheus"]
    webhook: Webhook = stack["webhook"]
    namespace = f"alert-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    log = tmp_path / "worker.log"
    env = {"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"w-{namespace}",
           "SATPULSE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", "SATPULSE_WORKER_WEB_PORT":
           str(stack["worker_port"]), "SATPULSE_WINDOW_SECONDS": "5", "SATPULSE_GRACE_SECONDS": "1",
           "SATPULSE_IDLE_SECONDS": "1"}
    ensure_topics(settings, names.all())
    worker = WorkerProcess(env, log, stack["worker_port"])
    worker.start(timeout=120)
    csat = f'channel:satpulse_window_csat_percent:final{{channel="{CHANNEL}",window="5s"}}'
    rated = f'channel:satpulse_window_rated:final{{channel="{CHANNEL}",window="5s"}}'
    started = time.monotonic()

    def publish(tag: str, n_rated: int, n_satisfied: int) -> None:
        with Publisher(settings.model_copy(update={"topic_namespace": namespace})) as publisher:
            for record in _feedback(f"{namespace}-{tag}", n_rated, n_satisfied, int(time.time() * 1000)):
                publisher.send(names.ingest, record["event_id"].encode(), json.dumps(record).encode())

    def window_shown(n_rated: int, percent: float) -> Callable[[], bool]:
        """True once Prometheus' recording rules show a final window with exactly these numbers."""
        def probe() -> bool:
            r, c = prometheus.value(rated), prometheus.value(csat)
            return r == n_rated and c is not None and abs(c - percent) < 1e-6
        return probe

    def stays_quiet(seconds: float) -> None:
        """SatpulseCsatLow is neither pending nor firing over several rule evaluations, and nothing was sent."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert prometheus.alert_states(ALERT) == []
            time.sleep(0.5)
        assert webhook.alerts(ALERT) == []

    try:
        # 1. guard: a 0 % window with 10 responses (< 20) -> no alert
        publish("guard", 10, 0)
        wait_for("the 10-response 0 % window in Prometheus", window_shown(10, 0.0), 90, log)
        stays_quiet(5)

        # 2. good CSAT: 27 of 30 satisfied (90 %) -> no alert
        publish("good", 30, 27)
        wait_for("the 90 % window in Prometheus", window_shown(30, 90.0), 90, log)
        stays_quiet(5)

        # 3. CSAT drops: 5 of 25 satisfied (20 %) -> SatpulseCsatLow reaches the webhook
        publish("bad", 25, 5)
        wait_for("the 20 % window in Prometheus", window_shown(25, 20.0), 90, log)
        firing = wait_for("a firing SatpulseCsatLow at the webhook",
                          lambda: [a for a in webhook.alerts(ALERT) if a["status"] == "firing"], 90, log)
        alert = firing[0]
        assert alert["labels"] == {"alertname": ALERT, "channel": CHANNEL, "window": "5s", "severity": "critical"}
        assert alert["annotations"]["summary"] == (
            f"CSAT on {CHANNEL} is 20.0% in the latest 5s window (threshold 70%, at least 20 responses)")
        assert alert["annotations"]["runbook_url"] == "docs/alerts.md#satpulsecsatlow"

        # 4. good feedback resumes: 36 of 40 (90 %) -> the alert resolves at the webhook
        publish("recovered", 40, 36)
        wait_for("the recovered 90 % window in Prometheus", window_shown(40, 90.0), 90, log)
        resolved = wait_for("a resolved SatpulseCsatLow at the webhook",
                            lambda: [a for a in webhook.alerts(ALERT) if a["status"] == "resolved"], 90, log)
        assert resolved[0]["labels"] == alert["labels"]
        assert prometheus.alert_states(ALERT) == []
        print(f"alert test phases took {time.monotonic() - started:.1f}s", file=sys.stderr)
    finally:
        worker.stop()
