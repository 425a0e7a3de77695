"""Sinks: ClickHouse (clean events, window cells and roll-ups, dead letters), its migrations, retention and the
reads behind reports and the dashboard."""
