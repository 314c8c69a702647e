"""What ``Client`` and ``AsyncClient`` share: settings, the exporter, the run lifecycle, and every method
that only queues (they never block, so they are the same for threads and for asyncio)."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar

import httpx

from stagewatch.sdk import ids, tracing
from stagewatch.sdk.context import RunContext
from stagewatch.sdk.control import ControlPlane
from stagewatch.sdk.decorators import ItemSelector, task_decorator
from stagewatch.sdk.diagnostics import log, throttled
from stagewatch.sdk.exporter import BatchExporter
from stagewatch.sdk.lifecycle import RunLifecycle
from stagewatch.sdk.options import ClientOptions, SpoolDir, resolve_options
from stagewatch.sdk.payloads import Record, log_record, new_event, scalar_attrs
from stagewatch.sdk.scope import StageScope
from stagewatch.sdk.spec import StageSpec
from stagewatch.sdk.spool import Spool
from stagewatch.sdk.stats import Stats
from stagewatch.sdk.transport import HttpSender

P = ParamSpec("P")
R = TypeVar("R")

EXIT_FLUSH_TIMEOUT = 5.0


class BaseClient:
    """The common part of ``Client`` and ``AsyncClient``; use one of those."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        spool_dir: SpoolDir = None,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        heartbeat_interval: float = 10.0,
        pipeline: str | None = None,
        worker: str | None = None,
        revision: str | None = None,
        enabled: bool = True,
        timeout: float = 10.0,
        guarded: bool = True,
        kill_grace: float = 5.0,
    ) -> None:
        self.options: ClientOptions = resolve_options(
            url, token, spool_dir=spool_dir, max_queue=max_queue, batch_size=batch_size,
            flush_interval=flush_interval, heartbeat_interval=heartbeat_interval, pipeline=pipeline,
            worker=worker, revision=revision, enabled=enabled, timeout=timeout, guarded=guarded,
            kill_grace=kill_grace,
        )  # fmt: skip
        connection = _connect(self.options, transport) if self.options.enabled else None
        self._exporter: BatchExporter | None = connection[0] if connection else None
        control = connection[1] if connection else None
        if self._exporter is None:
            self.options = replace(self.options, enabled=False)
        self._lifecycle = RunLifecycle(
            self._exporter,
            pipeline=self.options.pipeline,
            worker=self.options.worker,
            revision=self.options.revision,
            heartbeat_interval=self.options.heartbeat_interval,
            control=control,
            kill_grace=self.options.kill_grace,
        )
        # Garbage-collected without close(): stop the threads, without blocking the collector.
        weakref.finalize(self, _stop_soon, self._exporter, self._lifecycle).atexit = False
        _flush_at_exit(self)

    # --- runs ------------------------------------------------------------------------------------------

    def stage(
        self,
        name: str,
        item_id: str,
        *,
        account: str | None = None,
        scenario: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        attempt: int | None = None,
        run_id: str | None = None,
        pipeline: str | None = None,
        traceparent: str | None = None,
        key: str | None = None,
        payload: Any = None,
        guarded: bool | None = None,
        fail_open: bool = True,
    ) -> StageScope:
        """Report one run of stage ``name`` for ``item_id``: ``with client.stage("download", vid) as run:``.

        A guarded run (the default; ``guarded=False``, or the client's ``guarded=False``, turns it off)
        first asks the server whether it may run (``POST /v1/runs/begin``, with the idempotency ``key``,
        default the item id, and the JSON ``payload`` kept for the dead-letter queue). A refusal raises
        ``Skip``, ``Wait``, ``DeadLettered`` or ``Aborted`` before the body runs; a ``run`` takes the
        server's run id, attempt and deadline. If the server cannot decide, ``fail_open=True`` runs it
        unguarded and ``fail_open=False`` raises ``Wait``.

        On exit: succeeded, or failed with the exception's type, message, stack and retryable flag (the
        exception is re-raised unchanged). ``traceparent`` (W3C, e.g. from a Pub/Sub attribute)
        continues that trace; otherwise the enclosing run's or the item's known trace is continued, or a
        new one begins. For an unguarded run, ``run_id`` defaults to a new random id and ``attempt`` to
        1; a guarded run passes ``run_id`` to the server for its first attempt. Works with ``async
        with`` too (the network calls then run in a worker thread)."""
        spec = StageSpec(
            name, item_id, account, scenario, attrs, attempt, run_id, pipeline, traceparent, key, payload,
            guarded=self.options.guarded if guarded is None else guarded, fail_open=fail_open,
        )  # fmt: skip
        return StageScope(self._lifecycle, spec)

    def task(
        self, stage: str, *, item_id: ItemSelector = "item_id", **stage_kwargs: Any
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a sync or async function so that each call is one run of ``stage``. ``item_id`` names
        the argument holding the item id, or is a function of the bound arguments (a dict) returning
        it; other keywords go to ``stage()``. Inside, ``stagewatch.current_run()`` is the run."""
        return task_decorator(self.stage, stage, item_id, stage_kwargs)

    # --- item events -----------------------------------------------------------------------------------

    def item_created(
        self,
        item_id: str,
        *,
        source: str | None = None,
        actor: str | None = None,
        params: Mapping[str, Any] | None = None,
        account: str | None = None,
        scenario: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        pipeline: str | None = None,
    ) -> str:
        """Record that a video entered the pipeline (who submitted it, with which parameters). Returns
        the new W3C trace id of its story; later stages in this process continue it by themselves, and
        other processes do when given ``traceparent``."""
        trace = ids.trace_id()
        try:
            self._lifecycle.traces.remember(str(item_id), trace)
            fields = dict(
                pipeline=pipeline or self.options.pipeline, trace_id=trace, source=source, actor=actor,
                params=dict(params) if params else None, account=account, scenario=scenario,
                attrs=scalar_attrs(attrs),
            )  # fmt: skip
            self._submit(new_event("item.created", {"item_id": str(item_id)}, **fields))
        except Exception:
            log.exception("sdk.client.item_created_failed item_id=%s", item_id)
        return trace

    def enqueued(
        self, stage: str, item_id: str, *, attempt: int | None = None, run_id: str | None = None
    ) -> str:
        """Record that a run of ``stage`` for ``item_id`` waits in a queue (e.g. published to Pub/Sub).
        Returns its run id: pass it to the worker's ``stage(..., run_id=...)`` so both are one run."""
        run = run_id or ids.run_id()
        try:
            base: Record = {"item_id": str(item_id), "stage": stage, "attempt": attempt or 1, "run_id": run}
            trace = self._lifecycle.trace_hint(str(item_id))
            self._submit(new_event("run.enqueued", base, pipeline=self.options.pipeline, trace_id=trace))
        except Exception:
            log.exception("sdk.client.enqueued_failed item_id=%s", item_id)
        return run

    def inject(
        self,
        attributes: MutableMapping[str, str] | None = None,
        run: tracing.HasRunContext | RunContext | None = None,
    ) -> MutableMapping[str, str]:
        """Write the current run's trace context into Pub/Sub message attributes (both
        ``googclient_traceparent``, as the official client does, and ``traceparent``)."""
        return tracing.inject(attributes, run)

    @staticmethod
    def extract(attributes: Mapping[str, str] | None) -> str | None:
        """The ``traceparent`` carried by message attributes, for ``stage(..., traceparent=...)``."""
        return tracing.extract(attributes)

    def emit_log(self, record: Mapping[str, Any]) -> None:
        """Queue one log record for the server's log search (``POST /v1/logs``): ``level``, ``message``
        and optionally ``logger``, ``item_id``, ``run_id``, ``stage``, ``trace_id``, ``span_id``,
        ``attrs``, ``exception``; ``id`` and ``time`` are filled in when missing."""
        exporter = self._exporter
        if exporter is None:
            return
        try:
            exporter.submit_log(log_record(record))
        except Exception:
            if throttled("client.emit_log"):
                log.exception("sdk.client.emit_log_failed")

    @property
    def stats(self) -> Stats:
        """A snapshot of the delivery counters: queued, sent, duplicate, rejected, retried, spooled,
        dropped and spool_bytes."""
        return self._exporter.stats() if self._exporter is not None else Stats()

    # --- for the subclasses ----------------------------------------------------------------------------

    def _submit(self, event: Record) -> None:
        if self._exporter is not None:
            self._exporter.submit_event(event)

    def _flush(self, timeout: float) -> bool:
        if self._exporter is None:
            return True
        try:
            return self._exporter.flush(timeout)
        except Exception:
            log.exception("sdk.client.flush_failed")
            return False

    def _close(self, timeout: float) -> bool:
        if self._lifecycle.heartbeat is not None:
            self._lifecycle.heartbeat.stop()
        if self._exporter is None:
            return True
        try:
            return self._exporter.close(timeout)
        except Exception:
            log.exception("sdk.client.close_failed")
            return False


def _connect(
    options: ClientOptions, transport: httpx.BaseTransport | None
) -> tuple[BatchExporter, ControlPlane] | None:
    """The exporter and the control plane for ``options``, sharing one connection pool; None
    (telemetry off, logged) if they cannot be made."""
    assert options.url is not None
    try:
        sender = HttpSender(options.url, options.token, transport, options.timeout)
        spool = Spool(options.spool_dir) if options.spool_dir is not None else None
        exporter = BatchExporter(
            sender,
            spool,
            max_queue=options.max_queue,
            batch_size=options.batch_size,
            flush_interval=options.flush_interval,
        )
        return exporter, ControlPlane(sender, options.timeout)
    except Exception:
        log.exception("sdk.client.exporter_failed url=%s: telemetry is off", options.url)
        return None


def _stop_soon(exporter: BatchExporter | None, lifecycle: RunLifecycle) -> None:
    if lifecycle.heartbeat is not None:
        lifecycle.heartbeat.stop()
    if exporter is not None:
        exporter.stop()


# --- flushing at interpreter exit ---------------------------------------------------------------------

_live: weakref.WeakSet[BaseClient] = weakref.WeakSet()
_live_lock = threading.Lock()
_exit_hook_installed = False


def _flush_at_exit(client: BaseClient) -> None:
    """Remember ``client`` weakly; at interpreter exit, every client still alive is flushed and closed."""
    global _exit_hook_installed
    with _live_lock:
        _live.add(client)
        if not _exit_hook_installed:
            atexit.register(_close_live_clients)
            _exit_hook_installed = True


def _close_live_clients() -> None:
    for client in list(_live):
        client._close(EXIT_FLUSH_TIMEOUT)
