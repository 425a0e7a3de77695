"""Typed settings, resolved once at start-up from the environment (prefix ``SATPULSE_``) or a ``.env`` file.

Call :func:`get_settings` wherever settings are needed; it builds them once per process. Secrets are
``SecretStr`` so they never appear in ``repr`` or logs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.entities import DIMENSION_FIELDS
from domain.limits import Limits
from satpulse.stages import Stage

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob of the pipeline; the field name in upper case with ``SATPULSE_`` is its variable."""

    model_config = SettingsConfigDict(env_prefix="SATPULSE_", env_file=".env", extra="ignore")

    # where local services keep data, logs and pid files
    work_dir: Path = REPO_ROOT / ".work"

    # Kafka: the brokers to connect to; empty: the local broker of `satpulse services` (127.0.0.1:{kafka_port})
    kafka_bootstrap: str = ""
    kafka_port: int = 19092
    kafka_controller_port: int = 19094
    topic_partitions: int = 4
    topic_namespace: str = "satpulse"  # topics are named {namespace}.{name}.v{n} (satpulse/topics.py)

    # Kafka cluster (issue 17). Topics the pipeline creates get topic_replication_factor replicas and the topic
    # config min.insync.replicas = topic_min_insync_replicas (existing topics are left as they are); 1/1 suits
    # one broker. `satpulse services up --cluster` runs one combined broker+controller per port in
    # kafka_cluster_ports (its controller listens on port + 1) under {work_dir}/cluster/kafka-N; point the
    # pipeline at it with kafka_bootstrap = those ports, replication factor 3, min insync replicas 2 (docs/scaling.md).
    topic_replication_factor: int = Field(default=1, ge=1)
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    kafka_cluster_ports: list[int] = Field(default_factory=lambda: [19192, 19292, 19392], min_length=1)
    kafka_cluster_heap_mb: int = Field(default=512, ge=128)  # -Xmx of each cluster node (the single node: 1 GiB)

    @model_validator(mode="after")
    def _min_insync_within_replicas(self) -> Settings:
        """More in-sync replicas than replicas would make every acks=all write fail: refuse it at start-up."""
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(f"topic_min_insync_replicas ({self.topic_min_insync_replicas}) exceeds "
                             f"topic_replication_factor ({self.topic_replication_factor})")
        return self

    # ClickHouse: chdb:///path (embedded) or clickhouse://user:password@host:port/database; empty: embedded in
    # {work_dir}/chdb
    clickhouse_url: SecretStr = SecretStr("")
    clickhouse_native_port: int = 19000
    clickhouse_http_port: int = 18123

    # ClickHouse cluster (issue 17). With clickhouse_cluster set (a cluster name in the servers' remote_servers),
    # migrations create each table as Replicated*MergeTree ON CLUSTER (data in {table}_local, ZooKeeper path from
    # the {shard} and {replica} macros) plus a Distributed table under the table's own name that the pipeline
    # reads and writes synchronously; an insert is acknowledged once clickhouse_insert_quorum replicas of its
    # shard hold it (2 of 2: any one replica may die without losing an acknowledged batch; writes wait while
    # one is down). clickhouse_url may then name every replica: clickhouse://user:pw@host1:port1,host2:port2/db
    # (the client fails over in that order). `satpulse services up --cluster` runs ZooKeeper and one replica per
    # port in clickhouse_cluster_ports (http: clickhouse_cluster_http_ports, replication: port + 9) under
    # {work_dir}/cluster/ (devtools/clickhouse_cluster.py, docs/scaling.md#clickhouse-replicas).
    clickhouse_cluster: str | None = None
    clickhouse_insert_quorum: int = Field(default=2, ge=1)
    clickhouse_cluster_ports: list[int] = Field(default_factory=lambda: [19100, 19200], min_length=1)
    clickhouse_cluster_http_ports: list[int] = Field(default_factory=lambda: [18223, 18323], min_length=1)
    zookeeper_port: int = 19181

    # Prometheus / Alertmanager (local services)
    prometheus_port: int = 19090
    alertmanager_port: int = 19093
    alert_webhook_url: str = "http://127.0.0.1:19095/alerts"  # where the local Alertmanager posts alerts
    alertmanager_url: str | None = None  # e.g. http://127.0.0.1:19093: the dashboard lists its firing alerts

    # worker
    worker_web_port: int = 6066
    worker_id: str = "satpulse-worker"
    # stages this worker process runs (clean, window, dead_letters; another name is refused at start-up); split
    # them over processes to use more cores: one process per stage set, same worker_id (one consumer group). The
    # window stage with chDB: one process only
    worker_stages: list[Stage] = Field(default_factory=lambda: list(Stage), min_length=1)
    # backfills: stop (exit 0, with a summary) once every input partition's committed offset reached the end
    # offset it had when the worker started (satpulse worker --until-caught-up)
    worker_until_caught_up: bool = False
    window_seconds: int = 60
    grace_seconds: int = 10
    idle_seconds: float = 5.0  # a source partition with no input for this long stops holding the watermark back
    flush_max_rows: int = 20_000  # window stage: events per batch (cells written per batch barely grow with it)
    flush_max_age_seconds: float = 0.25  # a batch collects input for at most this long (latency vs. insert rate)
    rolling_refresh_seconds: float = 15.0  # how often the rolling CSAT gauges (15m/1h/24h) are read from ClickHouse
    # how often the watermark advances and window results are published (0.25: p99 < 1 s at 10k events/s, bench/)
    publish_interval_seconds: float = 0.25
    future_tolerance_seconds: int = 300  # events stamped further in the future are dead-lettered
    # stored roll-ups of the window cells (sinks/rollups.py), each a multiple of the previous one and of
    # window_seconds, refreshed after the writes of the last rollup_interval_seconds; empty: off (reports then sum
    # cells at query time)
    rollup_window_seconds: list[int] = Field(default_factory=lambda: [3600, 86400])
    # how stale the stored roll-ups may get: each refresh re-reads the touched hours' minute cells, which at every
    # write took a tenth of the worker's time at 10k events/s; 0: current whenever a batch is committed
    rollup_interval_seconds: float = 5.0

    # retention in days per kind of row (sinks/retention.py, `satpulse retention`); 0 = keep forever
    retention_events_days: int = 0  # feedback_events, ticket_events (by event time)
    retention_minute_cells_days: int = 0  # window cells of window_seconds (keep longer than any backfill reach)
    retention_hour_cells_days: int = 0  # stored 1 h roll-ups
    retention_day_cells_days: int = 0  # stored 1 d roll-ups
    retention_dead_letters_days: int = 0  # dead_letters (by failure time)

    # limits on untrusted input (domain/limits.py): larger or deeper submissions are dead-lettered as too_large /
    # too_deep; a dead letter carries at most dead_letter_payload_max_bytes of the original (plus size and hash)
    ingest_max_payload_bytes: int = 512 * 1024
    ingest_max_depth: int = 16
    ingest_max_text_chars: int = 16_384  # comments and other free text
    ingest_max_id_chars: int = 256  # ids, dimension values, scales, time zones
    ingest_max_items: int = 10_000
    ingest_max_event_bytes: int = 256 * 1024  # an encoded clean event
    dead_letter_payload_max_bytes: int = 64 * 1024

    # ingest
    redact_personal_data: bool = False
    pseudonymisation_key: SecretStr | None = None

    # window cells are kept for each of these (all = the total; default: every dimension the domain declares,
    # domain.entities.DIMENSION_FIELDS); values missing on a record count as "unknown"
    dimensions: list[str] = Field(default_factory=lambda: ["all", *DIMENSION_FIELDS])
    # SLA targets in seconds per normalised priority (low, medium, high, urgent); no target: never breached
    sla_first_response_seconds: dict[str, int] = Field(
        default_factory=lambda: {"urgent": 3600, "high": 4 * 3600, "medium": 8 * 3600, "low": 24 * 3600})
    sla_resolution_seconds: dict[str, int] = Field(
        default_factory=lambda: {"urgent": 4 * 3600, "high": 24 * 3600, "medium": 72 * 3600, "low": 168 * 3600})
    max_duration_seconds: int = 365 * 86400  # longer first-response/resolution times are quarantined as absurd
    entity_horizon_seconds: int = 7 * 86400  # ratings/cases idle this long (event time) leave memory
    entity_cache_per_partition: int = 50_000  # beyond this, least recently changed ratings/cases leave memory

    # ingestion service (adapters/service.py, docs/adapters.md): webhooks -> ingest topic
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8088
    ingest_max_body_bytes: int = 1024 * 1024  # larger bodies are refused with 413
    ingest_signature_tolerance_seconds: int = 300  # signed timestamps further from now are refused (401)
    ingest_replay_cache_size: int = 100_000  # delivery ids remembered for replay protection (LRU)
    ingest_replay_ttl_seconds: int = 86_400  # ... and for how long
    # accepted delivery ids, kept across restarts (sqlite3); None: {work_dir}/ingest/replay.sqlite3
    ingest_replay_db: Path | None = None
    ingest_publish_timeout_seconds: float = 30.0  # no broker acknowledgement within this: 503, nothing committed
    # per-vendor webhook secrets; a vendor without one refuses every request (401 not_configured)
    zendesk_webhook_secret: SecretStr | None = None
    intercom_client_secret: SecretStr | None = None
    helpscout_webhook_secret: SecretStr | None = None
    chatwoot_webhook_secret: SecretStr | None = None
    freshdesk_webhook_token: SecretStr | None = None  # sent by the automation rule as header X-Satpulse-Token
    freshdesk_basic_user: str | None = None  # or HTTP basic auth configured on the rule
    freshdesk_basic_password: SecretStr | None = None
    generic_webhook_secret: SecretStr | None = None

    # e-mail survey replies from IMAP mailboxes (satpulse channel imap; adapters/imap.py, docs/adapters.md)
    imap_url: str | None = None  # imap://host[:143] (plain, e.g. loopback) or imaps://host[:993] (TLS, verified)
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_mailboxes: list[str] = Field(default_factory=lambda: ["INBOX"])
    imap_poll_seconds: float = 60.0
    imap_processed_keyword: str = "$SatpulseProcessed"  # added to published messages, skipped later; "" = none
    imap_timeout_seconds: float = 30.0

    @field_validator("dimensions")
    @classmethod
    def _known_dimensions(cls, dimensions: list[str]) -> list[str]:
        """Every dimension is ``all`` or one the domain declares: a typo stops the start-up here instead of
        counting every record as "unknown"."""
        unknown = [name for name in dimensions if name not in ("all", *DIMENSION_FIELDS)]
        if unknown:
            raise ValueError(f"unknown dimension(s) {', '.join(map(repr, unknown))}: each must be 'all' or one of "
                             f"{', '.join(DIMENSION_FIELDS)} (domain/entities.py DIMENSION_FIELDS)")
        return dimensions

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        """Fill the settings whose default depends on another one."""
        if not self.kafka_bootstrap:
            self.kafka_bootstrap = f"127.0.0.1:{self.kafka_port}"
        if not self.clickhouse_url.get_secret_value():
            self.clickhouse_url = SecretStr(f"chdb://{self.work_dir / 'chdb'}")
        return self

    def input_limits(self) -> Limits:
        """The ``ingest_max_*`` settings as :class:`domain.limits.Limits`."""
        return Limits(max_payload_bytes=self.ingest_max_payload_bytes, max_depth=self.ingest_max_depth,
                      max_text_chars=self.ingest_max_text_chars, max_id_chars=self.ingest_max_id_chars,
                      max_items=self.ingest_max_items, max_event_bytes=self.ingest_max_event_bytes)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process (tests may call ``get_settings.cache_clear()``)."""
    return Settings()
