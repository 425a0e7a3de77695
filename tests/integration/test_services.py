"""The local services come up, answer their clients, and a second ``ensure_up`` leaves them alone."""

from __future__ import annotations

import json
import urllib.request

import pytest
from clickhouse_driver import Client
from kafka import KafkaAdminClient, KafkaConsumer

from devtools import services as local_services
from devtools.services import ServiceStatus
from satpulse.settings import get_settings

pytestmark = pytest.mark.integration

CORE = ["kafka", "clickhouse"]


def test_status_running_and_second_ensure_up_is_a_no_op(services: dict[str, ServiceStatus]) -> None:
    before = local_services.status(CORE)
    assert {name: st.state for name, st in before.items()} == {"kafka": "running", "clickhouse": "running"}
    assert all(st.pid is not None and st.startup_seconds is not None for st in before.values())

    local_services.ensure_up(CORE)

    after = local_services.status(CORE)
    assert {name: st.pid for name, st in after.items()} == {name: st.pid for name, st in before.items()}
    assert {name: st.pid for name, st in after.items()} == {name: st.pid for name, st in services.items()}


def test_kafka_answers_metadata(services: dict[str, ServiceStatus]) -> None:
    bootstrap = get_settings().kafka_bootstrap
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        assert isinstance(consumer.topics(), set)
    finally:
        consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        brokers = admin.describe_cluster()["brokers"]
    finally:
        admin.close()
    assert [(b["host"], b["port"]) for b in brokers] == [("127.0.0.1", get_settings().kafka_port)]


def test_clickhouse_answers_select_1(services: dict[str, ServiceStatus]) -> None:
    client = Client("127.0.0.1", port=get_settings().clickhouse_native_port)
    try:
        [(one, version)] = client.execute("SELECT 1, version()")
    finally:
        client.disconnect()
    print(f"ClickHouse server version {version}")
    assert one == 1
    assert version


def test_monitoring_ready_and_wired(monitoring: dict[str, ServiceStatus]) -> None:
    settings = get_settings()
    for port in (settings.prometheus_port, settings.alertmanager_port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as response:
            assert response.status == 200
    url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1/status/config"
    with urllib.request.urlopen(url, timeout=5) as response:
        config = json.load(response)["data"]["yaml"]
    assert f"127.0.0.1:{settings.worker_web_port}" in config
    assert f"127.0.0.1:{settings.alertmanager_port}" in config
