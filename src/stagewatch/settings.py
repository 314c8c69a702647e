"""One frozen ``Settings`` object: an explicit argument wins, then a ``STAGEWATCH_*`` environment
variable, then the default. Nothing is read at import time: call ``Settings()`` where it is needed."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGEWATCH_", frozen=True, extra="ignore")

    database_url: str = Field(
        default="sqlite:///stagewatch.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db",
    )
    config: str | None = Field(
        default=None, description="path to stagewatch.toml (default: ./stagewatch.toml)"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    url: str = Field(default="http://127.0.0.1:8000", description="server URL the CLI talks to")
    token: str | None = Field(default=None, description="API token the CLI sends")
    # Off only for a server on loopback (``serve`` refuses otherwise); every request is then "anonymous".
    auth: bool = Field(
        default=True, description="require an API token on every request but the health checks"
    )
    # A revoked token may still be accepted for this long by a server that verified it recently.
    auth_cache_seconds: float = Field(default=5.0, ge=0, description="how long a verified token is trusted")
    # Give every replica the same value, so a dashboard session works on each and survives restarts.
    session_secret: SecretStr | None = Field(
        default=None, description="key that signs dashboard sessions (default: random per server process)"
    )
    max_batch_events: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Group commit: how many events one shared transaction may hold.
    commit_max_events: int = Field(default=5000, ge=1)
    # Records (events, or log lines) waiting to be written before ingest answers 503 with Retry-After;
    # bounds the server's memory in a flood (~3 KB an event). 0 takes everything.
    max_ingest_backlog: int = Field(default=20_000, ge=0)
    log_level: str = "info"
    # Log lines per POST /v1/logs.
    max_batch_logs: int = Field(default=1000, ge=1)
    # Retention, in seconds; 0 or None keeps forever. Events are deleted only for items in a final status
    # (published, failed, dead_lettered, cancelled) not updated for that long: see service/retention.py.
    log_retention: float | None = Field(default=14 * 86400.0, ge=0, description="keep log lines this long")
    event_retention: float | None = Field(
        default=None, ge=0, description="keep finished items' events this long (default: forever)"
    )
    retention_interval: float = Field(default=3600.0, gt=0, description="seconds between retention runs")
    watchdog_interval: float = Field(
        default=5.0, gt=0, description="seconds between watchdog sweeps (stuck runs, time-outs, dwell SLOs)"
    )


def load_settings(**overrides: Any) -> Settings:
    """Settings where every override that is not None wins over the environment and the defaults."""
    given = {name: value for name, value in overrides.items() if value is not None}
    return Settings(**given)
