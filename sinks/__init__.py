"""Sinks: ClickHouse (history and window aggregates) and Prometheus exposition."""
