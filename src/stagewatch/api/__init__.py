"""The HTTP API (FastAPI). Thin: parse, call a service, render."""
