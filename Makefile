# satpulse — `make help` lists the targets. Every target installs what it needs first (scripts/bootstrap.sh).
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup demo test test-cluster unit integration lint services-up services-down bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install Debian packages, Kafka jars and the Python venv (idempotent)
	@bash scripts/bootstrap.sh

demo: setup ## the main job end to end: local Kafka, embedded ClickHouse, sample traffic, report, metrics, live dashboard
	$(PY) -m satpulse.cli demo

test: setup lint ## lint, type-check, then every test (starts the local services it needs); the cluster tests last
	$(PY) -m pytest -q -m "not cluster"
	$(PY) -m pytest -q -m cluster

test-cluster: setup ## only the tests on the local cluster (3 Kafka brokers, 2 ClickHouse replicas), ~3 min
	$(PY) -m pytest -q -m cluster

unit: setup ## fast tests of the pure parts only
	$(PY) -m pytest -q tests/unit

integration: setup ## tests against the real Kafka, ClickHouse server, chDB, Prometheus
	$(PY) -m pytest -q -m integration

lint: setup ## ruff, mypy (strict) and the one-way layers (import-linter, pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

services-up: setup ## start local Kafka and ClickHouse (add ARGS=--with-monitoring for Prometheus/Alertmanager)
	$(PY) -m satpulse.cli services up $(ARGS)

services-down: ## stop the local services (and the local cluster) this checkout started
	$(PY) -m satpulse.cli services down
	$(PY) -m satpulse.cli services down --cluster

bench: setup ## benchmark harness; more modes with ARGS="--modes latency,scaling,memory" (bench/README.md)
	@if [ -f bench/run.py ]; then $(PY) bench/run.py $(ARGS); else echo "bench: not built yet (issue: benchmark harness)"; exit 1; fi

clean: services-down ## stop services and remove local state (.work)
	rm -rf .work
