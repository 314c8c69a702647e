"""``StageScope``: what ``client.stage(...)`` returns, entered with ``with`` or ``async with``.

A guarded run asks the control plane on entry and reports its end on exit: both are network calls.
``with`` makes them on the caller's thread; ``async with`` makes them in a worker thread, so the event
loop never waits on the network. Asyncio also gets the stop: a stop from the control plane cancels the
task inside the stage, and the ``CancelledError`` leaves the stage as ``Cancelled``.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from stagewatch.sdk.context import RunContext, bound
from stagewatch.sdk.decisions import Lease
from stagewatch.sdk.diagnostics import log
from stagewatch.sdk.lifecycle import RunLifecycle
from stagewatch.sdk.run import Run, activate, deactivate
from stagewatch.sdk.spec import StageSpec


class StageScope:
    """Enter it with ``with`` or ``async with`` to get the ``Run``; inside, ``current_run()`` is that
    run. A refused guarded run raises its signal on entry, before the body runs. An exception leaving
    the block is reported and re-raised unchanged."""

    def __init__(self, lifecycle: RunLifecycle, spec: StageSpec) -> None:
        self._lifecycle = lifecycle
        self._spec = spec
        self._entered: list[tuple[Run, AbstractContextManager[RunContext], Any]] = []

    def __enter__(self) -> Run:
        return self._bind(self._lifecycle.start(self._spec))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run, binding, token = self._entered.pop()
        try:
            self._lifecycle.finish(run, exc)
        finally:
            _release(binding, token)

    async def __aenter__(self) -> Run:
        lifecycle, spec = self._lifecycle, self._spec
        context = lifecycle.prepare(spec)
        lease = await self._admit(context) if lifecycle.asks_control(spec, context) else None
        run = self._bind(lifecycle.open(spec, context, lease))
        run._stopper.bind_task()
        return run

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run, binding, token = self._entered.pop()
        leaving = run._stopper.release_task(exc)  # our own task cancel becomes Cancelled
        try:
            if self._lifecycle.finishes_remotely(run):
                await asyncio.to_thread(self._lifecycle.finish, run, leaving)
            else:
                self._lifecycle.finish(run, leaving)
        finally:
            _release(binding, token)
        if leaving is not None and leaving is not exc:
            raise leaving from exc

    async def _admit(self, context: RunContext | None) -> Lease | None:
        """``admit`` in a worker thread. If this task is cancelled meanwhile, the request goes on; should
        it win a lease, the lease is given back rather than left to time out as a failed attempt."""
        admitting = asyncio.ensure_future(asyncio.to_thread(self._lifecycle.admit, self._spec, context))
        try:
            return await asyncio.shield(admitting)
        except asyncio.CancelledError:
            admitting.add_done_callback(self._give_back)
            raise

    def _give_back(self, admitting: asyncio.Future[Lease | None]) -> None:
        if admitting.cancelled() or admitting.exception() is not None:
            return
        lease = admitting.result()
        if lease is not None:
            threading.Thread(
                target=self._lifecycle.give_back, args=(lease,), name="stagewatch-give-back", daemon=True
            ).start()

    def _bind(self, run: Run) -> Run:
        binding = bound(run.context)
        binding.__enter__()
        self._entered.append((run, binding, activate(run)))
        return run


def _release(binding: AbstractContextManager[RunContext], token: Any) -> None:
    deactivate(token)
    try:
        binding.__exit__(None, None, None)
    except ValueError:  # left in another context than it was entered in
        log.warning("sdk.run.context_mismatch: a stage was exited in another context than it was entered in")
