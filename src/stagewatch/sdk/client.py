"""``Client``: report a pipeline's work to stagewatch from threads or plain synchronous code.

    client = stagewatch.Client()            # STAGEWATCH_URL / STAGEWATCH_TOKEN from the environment

    with client.stage("download", video_id) as run:
        run.progress(0.5, "half way")
        ...                                  # an exception is reported as run.failed, then re-raised

    @client.task("publish", item_id="video_id")
    def publish(video_id: str) -> None: ...

Everything is queued and sent in batches by a background thread; when the server is down, records go
to a disk spool and are re-sent later. Nothing here ever raises because of telemetry.
"""

from __future__ import annotations

from types import TracebackType

from stagewatch.sdk.core import BaseClient


class Client(BaseClient):
    """The SDK's entry point for synchronous code. Make one per process and share it between threads.

    ``url`` and ``token`` default to ``STAGEWATCH_URL`` and ``STAGEWATCH_TOKEN``; ``worker`` and
    ``revision`` to Cloud Run's ``K_SERVICE`` and ``K_REVISION``. ``transport`` swaps the httpx
    transport (tests). ``spool_dir`` is where records wait during an outage (default
    ``$STAGEWATCH_SPOOL_DIR`` or ``~/.cache/stagewatch/spool/<hash of url>``; ``False`` turns the spool
    off). ``max_queue`` bounds the records held in memory per channel, ``batch_size`` and
    ``flush_interval`` shape the batches, ``heartbeat_interval`` paces heartbeats of open runs (a
    guarded run's lease may ask for more frequent ones). ``guarded`` is the default of
    ``stage(guarded=...)``: whether runs ask the control plane first. ``kill_grace`` is how long a
    stopped run's child processes get between SIGTERM and SIGKILL. ``enabled=False`` (or no URL at
    all) makes every call a cheap no-op; runs still work.
    """

    def flush(self, timeout: float = 5.0) -> bool:
        """Send everything queued so far and try the spool now, waiting at most ``timeout`` seconds.
        True when all of it reached the server; False otherwise (what is unsent stays in the spool)."""
        return self._flush(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, then stop the background threads. Called for you at interpreter exit."""
        return self._close(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
