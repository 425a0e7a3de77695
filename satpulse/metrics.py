"""The one place that names Prometheus metrics. Label cardinality is bounded: channel is one of
domain.clean.CHANNELS, reason one of domain.clean.REASONS, stage a fixed name; agent labels are never used
here."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from satpulse.stages import Stage

disable_created_metrics()  # type: ignore[no-untyped-call] # no *_created series: they double the exposition and no rule uses them
REGISTRY = CollectorRegistry(auto_describe=True)
# the ``stage`` label of each worker stage; alert rules and dashboards (config/) name these values
STAGE_LABEL = {Stage.CLEAN: "cleaner", Stage.WINDOW: "window", Stage.DEAD_LETTERS: "dead_letter_sink"}

# events entering a stage (adapter, cleaner, window)
EVENTS_IN = Counter("satpulse_events_in_total", "Events that entered a pipeline stage", ["stage"],
                    registry=REGISTRY)
# events a stage passed on, by kind (feedback, ticket)
EVENTS_OUT = Counter("satpulse_events_out_total", "Events a pipeline stage passed on", ["stage", "kind"],
                     registry=REGISTRY)
# inputs sent to the dead-letter topic, by stage and reason
DEAD_LETTERS = Counter("satpulse_dead_letters_total", "Inputs sent to the dead-letter topic",
                       ["stage", "reason"], registry=REGISTRY)
# events the window stage skipped because the store already held them (replay after restart)
REPLAY_SKIPPED = Counter("satpulse_replay_skipped_total", "Replayed events already in the store, not recounted",
                         registry=REGISTRY)
# feedback events with a rating, counted once stored, by channel and team
FEEDBACK_RATED = Counter("satpulse_feedback_rated_total", "Rated feedback events stored", ["channel", "team"],
                         registry=REGISTRY)
# rated feedback events that are satisfied, counted once stored, by channel and team
FEEDBACK_SATISFIED = Counter("satpulse_feedback_satisfied_total", "Satisfied feedback events stored",
                             ["channel", "team"], registry=REGISTRY)
# normalised score (1-5) of scored feedback, observed once stored, by channel
FEEDBACK_SCORE = Histogram("satpulse_feedback_score", "Normalised score (1-5) of stored feedback", ["channel"],
                           buckets=(1, 2, 3, 4, 5), registry=REGISTRY)
# CSAT % over the minute windows that started within the last period (15m, 1h, 24h) of event time, every
# worker's partitions included (read from ClickHouse); absent while nothing was rated in the period
ROLLING_CSAT = Gauge("satpulse_rolling_csat_percent", "CSAT % of feedback in the last period (all workers)",
                     ["dimension", "value", "period"], registry=REGISTRY)
# rated feedback behind satpulse_rolling_csat_percent (the minimum-responses guard)
ROLLING_RATED = Gauge("satpulse_rolling_rated", "Rated feedback in the last period (all workers)",
                      ["dimension", "value", "period"], registry=REGISTRY)
# CSAT % of the most recent final window (totals over every worker); absent while that window has no ratings
WINDOW_CSAT = Gauge("satpulse_window_csat_percent", "CSAT % of the latest final event-time window",
                    ["dimension", "value", "window"], registry=REGISTRY)
# rated count of the most recent final window (the minimum-responses guard for alerts)
WINDOW_RATED = Gauge("satpulse_window_rated", "Rated feedback in the latest final event-time window",
                     ["dimension", "value", "window"], registry=REGISTRY)
# events that arrived after their window was final (still applied to the store as corrections)
LATE_EVENTS = Counter("satpulse_late_events_total", "Events later than window end + grace", registry=REGISTRY)
# wall-clock now minus the event-time watermark
WATERMARK_DELAY = Gauge("satpulse_watermark_delay_seconds", "Wall clock minus event-time watermark",
                        registry=REGISTRY)
# messages in this worker's assigned partitions beyond its fetch position, by topic (highwater - position)
CONSUMER_LAG = Gauge("satpulse_consumer_lag_messages", "Messages not yet processed in assigned partitions",
                     ["topic"], registry=REGISTRY)
# ratings and cases moved out of memory (LRU beyond entity_cache_per_partition, or idle beyond the horizon);
# they are reloaded from ClickHouse when they change again
ENTITIES_EVICTED = Counter("satpulse_entities_evicted_total", "Ratings and cases moved out of worker memory",
                           registry=REGISTRY)
# rows per sink write
SINK_BATCH_ROWS = Histogram("satpulse_sink_batch_rows", "Rows per sink write", ["sink"],
                            buckets=(1, 10, 100, 1000, 5000, 10000, 50000), registry=REGISTRY)
# duration of successful sink writes
SINK_FLUSH_SECONDS = Histogram("satpulse_sink_flush_seconds", "Duration of a successful sink write", ["sink"],
                               registry=REGISTRY)
# failed sink write attempts (each is retried), by kind: transient (outage, overload) or permanent (the sink
# refuses the statement itself: syntax, type, size; see sinks.clickhouse.TRANSIENT_CODES)
SINK_ERRORS = Counter("satpulse_sink_errors_total", "Failed sink write attempts, retried", ["sink", "kind"],
                      registry=REGISTRY)
# retry loops stuck since a permanent error (0 when none is; a loop stops counting once its call succeeded)
SINK_BLOCKED_PERMANENT = Gauge("satpulse_sink_blocked_permanent", "Sink retry loops stuck on a permanent error",
                               ["sink"], registry=REGISTRY)
# bucket bounds of the duration histograms; they hold every SLA target of the alert rules
_DURATION_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 259200, 604800)
# case resolution time (resolved - created), observed once per new resolution, by channel and priority
RESOLUTION_SECONDS = Histogram("satpulse_resolution_seconds", "Support-case resolution time in seconds",
                               ["channel", "priority"], buckets=_DURATION_BUCKETS, registry=REGISTRY)
# case first-response time (first response - created), observed once per case, by channel and priority
FIRST_RESPONSE_SECONDS = Histogram("satpulse_first_response_seconds", "Support-case first-response time in seconds",
                                   ["channel", "priority"], buckets=_DURATION_BUCKETS, registry=REGISTRY)
# webhook requests answered by the ingestion service, by vendor (fixed route set), outcome (accepted, refused,
# failed) and reason (ok; internal_error: 500; else a key of adapters.service.REFUSAL_STATUS, which gives the status)
INGEST_REQUESTS = Counter("satpulse_ingest_requests_total", "Webhook requests answered, by vendor/outcome/reason",
                          ["vendor", "outcome", "reason"], registry=REGISTRY)
# time from request to answer of the ingestion service, by vendor (includes the broker acknowledgement)
INGEST_REQUEST_SECONDS = Histogram("satpulse_ingest_request_seconds", "Webhook request duration until answered",
                                   ["vendor"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                        2.5, 5, 10), registry=REGISTRY)
# rows of historical imports (satpulse import), by outcome (published, partial, rejected, no_event)
IMPORT_ROWS = Counter("satpulse_import_rows_total", "Rows read by satpulse import, by outcome", ["outcome"],
                      registry=REGISTRY)
