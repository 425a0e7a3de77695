"""The Prometheus rules: `promtool check rules`, `promtool test rules`, coverage of every alert by a firing and
a quiet promtool case, the conventions every alert follows, and mutations that the promtool suites must catch.

Needs only the promtool binary (Debian package prometheus); skipped where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from satpulse import metrics
from satpulse.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "config" / "prometheus" / "rules"
TESTS_DIR = REPO_ROOT / "config" / "prometheus" / "tests"
ALERTS_DOC = REPO_ROOT / "docs" / "alerts.md"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.yml"))
SEVERITIES = {"critical", "warning", "info"}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def _load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), path
    return loaded


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in _load(path)["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for rule in _rules():
        if "alert" in rule:
            found.setdefault(rule["alert"], []).append(rule)
    return found


def _alert_cases() -> list[tuple[str, str, str, bool]]:
    """(test file, test group, alertname, fires) of every alert_rule_test case."""
    cases = []
    for path in TEST_FILES:
        for group in _load(path)["tests"]:
            for case in group.get("alert_rule_test") or []:
                cases.append((path.name, group.get("name", "?"), case["alertname"], bool(case.get("exp_alerts"))))
    return cases


def _promtool(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings of a markdown document."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def _metric_names() -> set[str]:
    """Every series name the registry can expose (counters with _total, histograms with their parts)."""
    names = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


# ------------------------------------------------------------------------------------------------ promtool


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES, f"no rule files in {RULES_DIR}"
    assert TEST_FILES, f"no promtool test files in {TESTS_DIR}"


@needs_promtool
def test_promtool_check_rules() -> None:
    done = _promtool("check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(test_file: Path) -> None:
    done = _promtool("test", "rules", str(test_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_test_files_load_every_rule_file() -> None:
    for path in TEST_FILES:
        loaded = {(TESTS_DIR / name).resolve() for name in _load(path)["rule_files"]}
        assert loaded == {p.resolve() for p in RULE_FILES}, path.name


# ------------------------------------------------------------------------------------------------ coverage


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = set(_alerts())
    cases = _alert_cases()
    unknown = sorted({name for _, _, name, _ in cases} - alerts)
    # a case naming an alert that does not exist would pass as "quiet" without testing anything
    assert not unknown, f"promtool cases name alerts that no rule defines: {unknown}"
    firing = {name for _, _, name, fires in cases if fires}
    quiet = {name for _, _, name, fires in cases if not fires}
    assert alerts - firing == set(), f"alerts without a firing promtool case: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"alerts without a quiet promtool case: {sorted(alerts - quiet)}"


def test_issue_alerts_are_all_defined() -> None:
    """The alerts issue 6 asks for (docs/alerts.md describes each)."""
    assert set(_alerts()) >= {
        "SatpulseCsatLow", "SatpulseCsatDropWeekOverWeek", "SatpulseResolutionTimeAboveSla",
        "SatpulseNegativeFeedbackSurge", "SatpulseDeadLetterRateHigh", "SatpulseNoInput",
        "SatpulseWatermarkLagging", "SatpulseWorkerDown", "SatpulseWorkerAbsent", "SatpulseSinkFailing",
        "SatpulseSinkPermanentError",  # issue 14: a refused statement alerts apart from an outage
    }


# ------------------------------------------------------------------------------------------------ conventions


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_conventions(name: str) -> None:
    anchors = _anchors(ALERTS_DOC.read_text())
    for rule in _alerts()[name]:
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: needs a `for:` duration"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity label"
        annotations = rule.get("annotations", {})
        assert "$value" in annotations.get("summary", ""), f"{name}: the summary must carry {{{{ $value }}}}"
        assert annotations.get("description"), f"{name}: description"
        runbook = annotations.get("runbook_url", "")
        assert runbook.startswith("docs/alerts.md#"), f"{name}: runbook_url must point into docs/alerts.md"
        assert runbook.split("#", 1)[1] in anchors, f"{name}: {runbook} has no heading in docs/alerts.md"


def test_rules_use_only_defined_metrics() -> None:
    """Every satpulse_* series a rule reads is exposed by satpulse/metrics.py, and every level:metric:op series
    is recorded by a rule (a typo would make an alert silently never fire)."""
    known = _metric_names()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for rule in _rules():
        expr = str(rule["expr"])
        for name in re.findall(r"(?<![\w:])satpulse_[a-z_]+", expr):
            assert name in known, f"{rule.get('alert') or rule.get('record')}: {name} is not in satpulse/metrics.py"
        for name in re.findall(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", expr):
            assert name in recorded, f"{rule.get('alert') or rule.get('record')}: {name} is not recorded"


def test_sla_targets_are_the_resolution_sla_defaults() -> None:
    targets = {rule["labels"]["priority"]: int(re.fullmatch(r"vector\((\d+)\)", rule["expr"]).group(1))  # type: ignore[union-attr]
               for rule in _rules() if rule.get("record") == "priority:satpulse_resolution_sla_seconds:target"}
    assert targets == Settings().sla_resolution_seconds


def test_sla_targets_are_histogram_bucket_bounds() -> None:
    bounds = set(metrics.RESOLUTION_SECONDS._upper_bounds)
    targets = [rule for rule in _rules() if rule.get("record") == "priority:satpulse_resolution_sla_seconds:target"]
    assert {rule["labels"]["priority"] for rule in targets} >= {"urgent", "high", "medium", "low"}
    for rule in targets:
        seconds = float(re.fullmatch(r"vector\((\d+)\)", rule["expr"]).group(1))  # type: ignore[union-attr]
        assert seconds in bounds, f"SLA {seconds}s is not a bucket bound of satpulse_resolution_seconds"


# ------------------------------------------------------------------------------------------------ mutations

# (what a careless edit would change, in config/prometheus/rules/satpulse.yml) -> the promtool suite must fail
MUTATIONS = {
    "csat_guard_dropped": ("channel:satpulse_window_rated:final >= 20", "channel:satpulse_window_rated:final >= 0"),
    "csat_threshold_inclusive": ("channel:satpulse_window_csat_percent:final < 70",
                                 "channel:satpulse_window_csat_percent:final <= 70"),
    "csat_for_dropped": ("        for: 5m\n        labels:\n          severity: critical\n        annotations:\n"
                         "          summary: 'CSAT on",
                         "        for: 0m\n        labels:\n          severity: critical\n        annotations:\n"
                         "          summary: 'CSAT on"),
    "surge_minimum_dropped": ("60 * channel:satpulse_feedback_unsatisfied:rate5m >= 2",
                              "60 * channel:satpulse_feedback_unsatisfied:rate5m >= 0"),
    "surge_missing_baseline_not_zero": ("or 0 * channel:satpulse_feedback_unsatisfied:rate5m",
                                        "or channel:satpulse_feedback_unsatisfied:rate5m"),
    "resolution_guard_dropped": ("channel_priority:satpulse_resolutions:increase1h >= 10",
                                 "channel_priority:satpulse_resolutions:increase1h >= 0"),
    "dead_letter_guard_dropped": ("stage:satpulse_dead_letters:rate5m * 300 >= 10",
                                  "stage:satpulse_dead_letters:rate5m * 300 >= 0"),
    "watermark_catching_up_alerts": ("and deriv(satpulse_watermark_delay_seconds[10m]) > 0",
                                     "and deriv(satpulse_watermark_delay_seconds[10m]) > -1"),
    "worker_down_other_jobs": ('up{job="satpulse-worker"} == 0', "up == 0"),
    "sink_failing_counts_permanent": ('satpulse_sink_errors_total{kind="transient"}', "satpulse_sink_errors_total"),
    "sink_permanent_always_on": ("(satpulse_sink_blocked_permanent) > 0", "(satpulse_sink_blocked_permanent) >= 0"),
    "sink_permanent_for_dropped": ("(satpulse_sink_blocked_permanent) > 0\n        for: 2m",
                                   "(satpulse_sink_blocked_permanent) > 0\n        for: 0m"),
    "ingest_unavailable_counts_every_refusal": ('satpulse_ingest_requests_total{reason="unavailable"}[2m]',
                                                'satpulse_ingest_requests_total{outcome="refused"}[2m]'),
    "ingest_unavailable_for_dropped": ('{reason="unavailable"}[2m])) > 0\n        for: 2m',
                                       '{reason="unavailable"}[2m])) > 0\n        for: 0m'),
    "webhook_auth_threshold_lowered": ("[10m])) > 0.5\n", "[10m])) > 0.2\n"),
    "webhook_auth_minimum_dropped": ('not_configured"}[10m])) >= 10', 'not_configured"}[10m])) >= 0'),
    "ingest_down_other_jobs": ('up{job="satpulse-ingest"} == 0', "up == 0"),
}


@needs_promtool
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_promtool_suite_catches_mutation(mutation: str, tmp_path: Path) -> None:
    old, new = MUTATIONS[mutation]
    source = RULES_DIR / "satpulse.yml"
    text = source.read_text()
    assert text.count(old) == 1, f"mutation {mutation!r} no longer matches the rules exactly once"
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "satpulse.yml").write_text(text.replace(old, new))
    shutil.copy(TESTS_DIR / "satpulse_test.yml", tmp_path / "tests" / "satpulse_test.yml")
    done = _promtool("test", "rules", str(tmp_path / "tests" / "satpulse_test.yml"))
    assert done.returncode != 0, f"the promtool suite did not notice mutation {mutation!r}"


# ------------------------------------------------------------------------------------------------ Alertmanager

ALERTMANAGER_CONFIG = REPO_ROOT / "config" / "alertmanager" / "alertmanager.yml"


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool not installed (prometheus-alertmanager)")
def test_alertmanager_config_is_valid() -> None:
    amtool = shutil.which("amtool")
    assert amtool is not None
    done = subprocess.run([amtool, "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_names_only_existing_alerts_and_severities() -> None:
    config = _load(ALERTMANAGER_CONFIG)
    matchers = [m for rule in config.get("inhibit_rules", [])
                for m in rule.get("source_matchers", []) + rule.get("target_matchers", [])]
    matchers += [m for route in config["route"].get("routes", []) for m in route.get("matchers", [])]
    alerts = set(_alerts())
    for matcher in matchers:
        name, op, value = re.fullmatch(r'(\w+)\s*(=~|!=|=)\s*"(.*)"', matcher).groups()  # type: ignore[union-attr]
        values = value.split("|") if op == "=~" else [value]
        if name == "alertname":
            assert set(values) <= alerts, f"{matcher}: no such alert"
        elif name == "severity":
            assert set(values) <= SEVERITIES, matcher
