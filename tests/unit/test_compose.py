"""Static checks of docker-compose.yml: it validates, has the expected services, and is safe to run locally.

No Docker daemon is needed: ``docker-compose config`` only parses and interpolates the file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CONFIG_DIR = REPO_ROOT / "config"

EXPECTED_SERVICES = ("kafka", "clickhouse", "prometheus", "alertmanager", "grafana", "worker", "ingest")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}; `$$` is a literal dollar
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _with_defaults(value: str) -> str:
    """Interpolate like compose would with an empty environment (defaults only), so results are stable."""
    return _VARIABLE.sub(lambda m: m.group("arg") if m.group("op") in ("-", ":-") else "", value).replace(
        "$$", "$"
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), "docker-compose.yml must be a mapping"
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml defines no services"
    return found


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(host source, container target, read_only) of every bind mount of a service."""
    mounts: list[tuple[str, str, bool]] = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = _with_defaults(volume).split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
            if len(parts) == 1 or not source.startswith((".", "/", "~")):
                continue  # anonymous or named volume
            mounts.append((source, target, len(parts) > 2 and "ro" in parts[2].split(",")))
        elif volume.get("type", "volume") == "bind":
            mounts.append(
                (_with_defaults(volume["source"]), volume["target"], bool(volume.get("read_only", False)))
            )
    return mounts


def _is_config_source(source: str) -> bool:
    resolved = (REPO_ROOT / source).resolve()
    return resolved == CONFIG_DIR or CONFIG_DIR in resolved.parents


def test_compose_config_validates() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("the docker-compose binary is not installed, so `docker-compose config -q` cannot run")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE.name), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stdout}\n{result.stderr}"


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the top-level `version:` key is obsolete in the Compose Specification"


def test_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = sorted(set(EXPECTED_SERVICES) - set(services))
    assert not missing, f"services missing from docker-compose.yml: {missing}"


@pytest.mark.parametrize("name", EXPECTED_SERVICES)
def test_service_has_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    healthcheck = services.get(name, {}).get("healthcheck")
    assert isinstance(healthcheck, dict), f"service {name!r} has no healthcheck"
    assert not healthcheck.get("disable", False), f"service {name!r} disables its healthcheck"
    test = healthcheck.get("test")
    assert test and test not in (["NONE"], "NONE"), f"service {name!r} has an empty healthcheck test"


def test_every_service_has_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    without = sorted(name for name, service in services.items() if not service.get("healthcheck"))
    assert not without, f"services without a healthcheck: {without}"


def test_host_ports_bound_to_localhost(services: dict[str, dict[str, Any]]) -> None:
    problems: list[str] = []
    for name, service in services.items():
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host bypasses port bindings")
        for port in service.get("ports", []):
            if isinstance(port, dict):  # long syntax
                if port.get("published") is not None and port.get("host_ip") != "127.0.0.1":
                    problems.append(f"{name}: {port} is not bound to host_ip 127.0.0.1")
                continue
            spec = _with_defaults(str(port))
            parts = spec.split(":")
            if len(parts) != 3 or parts[0] != "127.0.0.1":
                problems.append(f"{name}: {port!r} (as {spec!r}) is not bound to 127.0.0.1")
    assert not problems, "host ports must be published on 127.0.0.1 only:\n" + "\n".join(problems)


def test_config_mounts_exist_and_are_read_only(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    problems: list[str] = []
    for name, service in services.items():
        for source, target, read_only in _bind_mounts(service):
            if not _is_config_source(source):
                continue
            checked += 1
            if not (REPO_ROOT / source).exists():
                problems.append(f"{name}: {source} (mounted at {target}) does not exist in the repo")
            if not read_only:
                problems.append(f"{name}: {source} is mounted at {target} without :ro")
    assert checked, "no service mounts anything from ./config"
    assert not problems, "\n".join(problems)


def test_config_files_named_in_commands_exist(services: dict[str, dict[str, Any]]) -> None:
    """`--config.file=/etc/...` must resolve, through the service's bind mounts, to a file in the repo."""
    problems: list[str] = []
    for name, service in services.items():
        command = service.get("command") or []
        arguments = command.split() if isinstance(command, str) else [str(arg) for arg in command]
        for argument in arguments:
            if not argument.startswith("--config.file="):
                continue
            in_container = Path(argument.split("=", 1)[1])
            host_path = None
            for source, target, _ in _bind_mounts(service):
                if in_container == Path(target) or Path(target) in in_container.parents:
                    host_path = REPO_ROOT / source / in_container.relative_to(target)
            if host_path is None or not host_path.is_file():
                problems.append(
                    f"{name}: {in_container} is not provided by a mounted repo file ({host_path})"
                )
    assert not problems, "\n".join(problems)


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    problems: list[str] = []
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                parts = volume.split(":")
                if len(parts) > 1 and not parts[0].startswith((".", "/", "~", "$")):
                    if parts[0] not in declared:
                        problems.append(
                            f"{name}: volume {parts[0]!r} is not declared under top-level volumes"
                        )
                elif len(parts) == 1:
                    problems.append(f"{name}: anonymous volume {volume!r}; use a named volume")
    assert not problems, "\n".join(problems)


def test_prometheus_scrapes_compose_services(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((CONFIG_DIR / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    assert {"worker:6066", "ingest:8080"} <= targets
    alertmanagers = {
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager.get("static_configs", [])
        for target in static.get("targets", [])
    }
    assert alertmanagers == {"alertmanager:9093"}
    unknown = sorted(
        target for target in targets | alertmanagers if target.split(":")[0] not in {*services, "localhost"}
    )
    assert not unknown, f"Prometheus targets that are not compose services: {unknown}"
