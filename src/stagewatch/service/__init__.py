"""Use cases: ingest, queries, and (later) control actions. The API and CLI call these."""
