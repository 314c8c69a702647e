"""A client's settings: the argument, else a ``STAGEWATCH_*`` (or Cloud Run ``K_*``) environment
variable, else a default. Read when a client is made, never at import; a bad value logs and falls back."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stagewatch.sdk.diagnostics import log
from stagewatch.sdk.spool import default_spool_dir

MAX_BATCH = 1000  # the server's cap on events per request

SpoolDir = str | os.PathLike[str] | Literal[False] | None


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Resolved settings of one client; ``enabled`` is False when there is nowhere to send."""

    url: str | None
    token: str | None
    spool_dir: Path | None
    max_queue: int
    batch_size: int
    flush_interval: float
    heartbeat_interval: float
    pipeline: str | None
    worker: str | None
    revision: str | None
    enabled: bool
    timeout: float
    guarded: bool = True
    kill_grace: float = 5.0


def resolve_options(
    url: str | None,
    token: str | None,
    *,
    spool_dir: SpoolDir,
    max_queue: int,
    batch_size: int,
    flush_interval: float,
    heartbeat_interval: float,
    pipeline: str | None,
    worker: str | None,
    revision: str | None,
    enabled: bool,
    timeout: float,
    guarded: bool = True,
    kill_grace: float = 5.0,
    environ: Mapping[str, str] | None = None,
) -> ClientOptions:
    env = dict(os.environ if environ is None else environ)
    url = url or env.get("STAGEWATCH_URL") or None
    if enabled and not url:
        log.warning("sdk.client.no_url: neither url= nor STAGEWATCH_URL is set; telemetry is off")
    return ClientOptions(
        url=url,
        token=token or env.get("STAGEWATCH_TOKEN") or None,
        spool_dir=_spool_dir(spool_dir, url, env),
        max_queue=int(_positive("max_queue", max_queue, 10_000)),
        batch_size=min(MAX_BATCH, int(_positive("batch_size", batch_size, 500))),
        flush_interval=_positive("flush_interval", flush_interval, 0.5),
        heartbeat_interval=_positive("heartbeat_interval", heartbeat_interval, 10.0),
        pipeline=pipeline,
        worker=worker or env.get("K_SERVICE") or None,
        revision=revision or env.get("K_REVISION") or None,
        enabled=bool(enabled and url),
        timeout=_positive("timeout", timeout, 10.0),
        guarded=bool(guarded),
        kill_grace=_positive("kill_grace", kill_grace, 5.0),
    )


def _spool_dir(value: SpoolDir, url: str | None, env: dict[str, str]) -> Path | None:
    if value is False or not url:
        return None
    if value is None:
        return default_spool_dir(url, env)
    return Path(value).expanduser()


def _positive(name: str, value: float, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return value
    log.warning("sdk.client.bad_option %s=%r: using %r", name, value, default)
    return default
