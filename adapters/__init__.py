"""Channel adapters: turn what each source sends into raw submissions on the ingest topic."""
