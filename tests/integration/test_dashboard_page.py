"""The dashboard page in a real browser (Debian's headless Chromium through its chromedriver, Selenium), served
by a worker on the real broker with chDB, or by ``satpulse dashboard`` next to a worker on the ClickHouse server:
the figures the page shows equal an offline computation of the input, new events reach the page within seconds,
and the browser logs no error. Saves a screenshot in tmp_path; with SATPULSE_UPDATE_SCREENSHOT=1, the chDB run
also writes it to docs/img/dashboard.png (the README's picture). The alerts come from the real Alertmanager's
API."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from dashboard.model import alerts_view
from dashboard.web import fetch_alerts
from devtools.sample import sample_submissions, sample_ticket_events, write_jsonl
from devtools.worker_process import WorkerProcess
from satpulse.settings import get_settings
from sinks.clickhouse import connect
from tests.integration.offline import CHANNEL, SATISFIED, clickhouse_url, free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")  # Debian's, never downloaded
WEEK_MS, HOUR_MS = 7 * 86_400_000, 3_600_000
RATINGS, LAST_WEEK_RATINGS, CASES, MORE_RATINGS = 400, 200, 40, 60
MALFORMED = ("not json", '{"kind": "feedback", "event_id": ')
NEW_TEAM = "escalations"  # one case's team, with no rating: its CSAT must read "no ratings"
PAGE_WAIT_SECONDS = 60  # first figures: worker start-up, consuming and writing included
UPDATE_WAIT_SECONDS = 20  # new events -> page (worker batch + write + the page's 2 s poll)
SHOT_WIDTH = 1440

# what the page shows, read from the DOM as displayed (textContent)
READ_TABLE = """return Array.from(document.querySelectorAll('#by-value tbody tr[data-value]')).map(tr =>
    [tr.dataset.value, ...['rated', 'csat', 'created'].map(c => tr.querySelector(`[data-col=${c}]`).textContent)]);"""
READ_TILE = """const t = document.querySelector('#tiles [data-period="' + arguments[0] + '"]');
    return t ? ['.muted', '.tile-value', '.trend'].map(c => t.querySelector(c).textContent) : null;"""
READ_DEAD = """return Array.from(document.querySelectorAll('#dead-letters tbody tr[data-reason]')).map(tr =>
    [tr.dataset.reason, tr.children[2].textContent]);"""

Figures = tuple[int, float | None, float | int | None]  # rated, CSAT % (None: "no ratings"), a third figure


def count(text: str) -> int:
    return int(text.removesuffix(" ratings").replace(",", ""))


def percent(text: str) -> float | None:
    """A CSAT as the page writes it ("34.3 %", or "no ratings" for None)."""
    return None if text == "no ratings" else float(text.removesuffix(" %"))


def points(text: str) -> float | None:
    """A trend as the page writes it ("▲ +2.3 pts vs last week", "▼ \u22120.4 pts ..."), None without one."""
    return float(text.split()[1].replace("\u2212", "-")) if "pts" in text else None


def close(page: dict[str, Figures], expected: dict[str, Figures]) -> bool:
    """The same values; floats (percentages) equal up to the page's rounding to 0.1."""
    def near(p: object, e: object) -> bool:
        return abs(p - e) <= 0.05 + 1e-9 if isinstance(p, float) and isinstance(e, float) else p == e

    return page.keys() == expected.keys() and all(
        all(near(p, e) for p, e in zip(page[k], expected[k], strict=True)) for k in expected)


def csat(ratings: list[dict[str, Any]]) -> float:
    return 100 * sum(SATISFIED[r["rating_scale"]](r["rating_value"]) for r in ratings) / len(ratings)


def by_channel(ratings: list[dict[str, Any]], tickets: list[dict[str, Any]]) -> dict[str, Figures]:
    """channel -> (rated, CSAT, tickets created), computed here from the input."""
    channels = {CHANNEL[e["channel"]] for e in ratings + tickets}
    out: dict[str, Figures] = {}
    for channel in channels:
        rated = [r for r in ratings if CHANNEL[r["channel"]] == channel]
        created = sum(t["status"] == "created" and CHANNEL[t["channel"]] == channel for t in tickets)
        out[channel] = (len(rated), csat(rated) if rated else None, created)
    return out


def day_tile(ratings: list[dict[str, Any]], last_week: list[dict[str, Any]]) -> dict[str, Figures]:
    """The 24 h tile: (rated, CSAT, change against last week in points), computed here from the input."""
    return {"24h": (len(ratings), csat(ratings), csat(ratings) - csat(last_week))}


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000",
                "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, seconds: float, read: Callable[[], T], ok: Callable[[T], bool],
             expected: Any) -> float:
    """Poll ``read()`` until ``ok`` accepts it; returns the seconds it took. Fails with the last value read."""
    started = time.monotonic()
    seen: list[T] = []

    def matches(_: Any) -> bool:
        seen.append(read())
        return ok(seen[-1])

    try:
        WebDriverWait(driver, seconds, poll_frequency=0.2).until(matches)
    except TimeoutException:
        pytest.fail(f"the page still shows {seen[-1] if seen else None!r}, expected {expected!r}")
    return time.monotonic() - started


def wait_ready(url: str, seconds: float) -> None:
    """Until ``url`` answers 200: nothing listens while the server starts, and the data endpoint answers 503
    until the store can be read (the page then says it is waiting; the browser would log each 503 as an
    error). Raises the last error after ``seconds``, or at once for another HTTP status."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def publish(path: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "satpulse.cli", "publish", str(path)], env=env, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(params=["chdb", "server"])
def served(request: pytest.FixtureRequest, services: object, tmp_path: Path) -> Iterator[tuple[str, WorkerProcess]]:
    """(dashboard URL, worker): with chDB the worker serves the page; with the ClickHouse server (a fresh
    database) ``satpulse dashboard`` does, with its own connection."""
    namespace = f"dash-{uuid.uuid4().hex[:8]}"
    url = clickhouse_url(request.param, tmp_path, "dash")
    port = free_port()
    worker = WorkerProcess({"SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORKER_ID": f"w-{namespace}",
                            "SATPULSE_CLICKHOUSE_URL": url, "SATPULSE_WORKER_WEB_PORT": str(port),
                            "SATPULSE_IDLE_SECONDS": "2"}, tmp_path / "worker.log", port)
    standalone = None
    worker.start(timeout=90)
    try:
        if request.param == "server":
            port = free_port()
            with (tmp_path / "dashboard.log").open("wb") as log:
                standalone = subprocess.Popen([sys.executable, "-m", "satpulse.cli", "dashboard", "--url", url,
                                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        wait_ready(f"http://127.0.0.1:{port}/dashboard/data", PAGE_WAIT_SECONDS)
        yield f"http://127.0.0.1:{port}/dashboard", worker
    finally:
        if standalone is not None:
            standalone.terminate()
            assert standalone.wait(10) == 0, (tmp_path / "dashboard.log").read_text()
        worker.stop()
        if request.param == "server":
            ch = connect(url)
            ch.execute(f"DROP DATABASE IF EXISTS {ch.database}")
            ch.close()


def test_dashboard_page_shows_live_figures(served: tuple[str, WorkerProcess], browser: webdriver.Chrome,
                                           request: pytest.FixtureRequest, tmp_path: Path) -> None:
    page_url, worker = served
    now_ms = int(time.time() * 1000)
    ratings = list(sample_submissions(RATINGS, now_ms - 12 * HOUR_MS, 12 * HOUR_MS - 120_000, seed=31))
    last_week = list(sample_submissions(LAST_WEEK_RATINGS, now_ms - WEEK_MS - 12 * HOUR_MS, 12 * HOUR_MS, seed=33))
    tickets = list(sample_ticket_events(CASES, now_ms - 4 * HOUR_MS, 30 * 60_000, seed=31))
    first_case = tickets[0]["ticket_id"]
    tickets = [{**t, "team": NEW_TEAM} if t["ticket_id"] == first_case else t for t in tickets]
    write_jsonl(tmp_path / "first.jsonl", iter(last_week + ratings + tickets), MALFORMED)
    more = list(sample_submissions(MORE_RATINGS, now_ms - 60_000, 30_000, seed=32))
    write_jsonl(tmp_path / "more.jsonl", iter(more))

    publish(tmp_path / "first.jsonl", worker.env)
    browser.get(page_url)
    browser.find_element(By.CSS_SELECTOR, '#period button[data-period="24h"]').click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#dimension option"))
    Select(browser.find_element(By.ID, "dimension")).select_by_visible_text("channel")

    def table() -> dict[str, Figures]:
        return {value: (count(rated), percent(csat), count(created))
                for value, rated, csat, created in browser.execute_script(READ_TABLE)}

    def tile() -> dict[str, Figures]:
        shown = browser.execute_script(READ_TILE, "24h")
        return {"24h": (count(shown[0]), percent(shown[1]), points(shown[2]))} if shown else {}

    def check(read: Callable[[], dict[str, Figures]], expected: dict[str, Figures], seconds: float) -> float:
        return wait_for(browser, seconds, read, lambda page: close(page, expected), expected)

    check(table, by_channel(ratings, tickets), PAGE_WAIT_SECONDS)
    check(tile, day_tile(ratings, last_week), 5)
    dead = [["unparseable_payload", "2"]]
    wait_for(browser, 5, lambda: browser.execute_script(READ_DEAD), lambda page: page == dead, dead)
    volume = {e.get_attribute("data-col"): e.text for e in browser.find_elements(By.CSS_SELECTOR, "#volume .big")}
    assert volume == {"rated": f"{RATINGS:,}", "created": f"{CASES:,}", "resolved": f"{CASES:,}"}

    publish(tmp_path / "more.jsonl", worker.env)
    took = check(table, by_channel(ratings + more, tickets), UPDATE_WAIT_SECONDS)
    check(tile, day_tile(ratings + more, last_week), 5)
    print(f"new events reached the page in {took:.1f} s")
    screenshot(browser, tmp_path / "dashboard.png")
    if request.node.callspec.params["served"] == "chdb" and os.environ.get("SATPULSE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "dashboard.png", REPO_ROOT / "docs" / "img" / "dashboard.png")

    Select(browser.find_element(By.ID, "dimension")).select_by_visible_text("team")
    check(lambda: {NEW_TEAM: table().get(NEW_TEAM, (-1, -1, -1))}, {NEW_TEAM: (0, None, 1)}, 10)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def screenshot(driver: webdriver.Chrome, path: Path) -> None:
    """The whole page (beyond the window's height) as PNG, through the DevTools protocol."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": SHOT_WIDTH, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def test_firing_alerts_from_the_real_alertmanager(monitoring: object) -> None:
    """fetch_alerts and alerts_view against Alertmanager's real API (v2): an alert posted to it is listed as
    firing with its summary and labels (an unprocessed alert is not firing yet: bounded wait)."""
    url = f"http://127.0.0.1:{get_settings().alertmanager_port}"
    name = f"SatpulseDashboardTest{uuid.uuid4().hex[:8]}"
    ends = datetime.now(UTC) + timedelta(minutes=2)  # expires by itself
    alert = {"labels": {"alertname": name, "severity": "warning", "channel": "chat"},
             "annotations": {"summary": "posted by the dashboard test"}, "endsAt": ends.isoformat()}
    post = urllib.request.Request(f"{url}/api/v2/alerts", json.dumps([alert]).encode(), method="POST",
                                  headers={"Content-Type": "application/json"})
    urllib.request.urlopen(post, timeout=10).close()
    deadline = time.monotonic() + 10
    while True:
        view = alerts_view(asyncio.run(fetch_alerts(url)))
        mine = [(a["name"], a["severity"], a["summary"], a["where"]) for a in view["firing"] if a["name"] == name]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert view["error"] is None
    assert mine == [(name, "warning", "posted by the dashboard test", "channel=chat")]
