"""Typed settings, resolved once at start-up from the environment (prefix ``SATPULSE_``) or a ``.env`` file.

Call :func:`get_settings` wherever settings are needed; it builds them once per process. Secrets are
``SecretStr`` so they never appear in ``repr`` or logs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob of the pipeline; the field name in upper case with ``SATPULSE_`` is its variable."""

    model_config = SettingsConfigDict(env_prefix="SATPULSE_", env_file=".env", extra="ignore")

    # where local services keep data, logs and pid files
    work_dir: Path = REPO_ROOT / ".work"

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_port: int = 19092
    kafka_controller_port: int = 19094
    topic_partitions: int = 4
    topic_namespace: str = "satpulse"  # topics are named {namespace}.{name}.v{n} (satpulse/topics.py)

    # ClickHouse: chdb:///path (embedded, default) or clickhouse://user:password@host:port/database
    clickhouse_url: SecretStr = SecretStr("chdb://" + str(REPO_ROOT / ".work" / "chdb"))
    clickhouse_native_port: int = 19000
    clickhouse_http_port: int = 18123

    # Prometheus / Alertmanager (local services)
    prometheus_port: int = 19090
    alertmanager_port: int = 19093
    alert_webhook_url: str = "http://127.0.0.1:19095/alerts"  # where the local Alertmanager posts alerts

    # worker
    worker_web_port: int = 6066
    worker_id: str = "satpulse-worker"
    window_seconds: int = 60
    grace_seconds: int = 10
    idle_seconds: float = 5.0  # a source partition with no input for this long stops holding the watermark back
    flush_max_rows: int = 5000
    flush_max_age_seconds: float = 1.0
    future_tolerance_seconds: int = 300  # events stamped further in the future are dead-lettered

    # ingest
    redact_personal_data: bool = False
    pseudonymisation_key: SecretStr | None = None

    dimensions: list[str] = Field(default_factory=lambda: ["all", "channel"])


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process (tests may call ``get_settings.cache_clear()``)."""
    return Settings()
