"""Ingest with group commit: concurrent requests share one transaction.

Each request hands its validated events to the ``GroupCommitter`` and awaits the outcome. One writer
task takes everything queued so far (up to ``max_events``), applies it in one transaction on a worker
thread, and answers every waiting request. While a transaction runs, new requests queue up for the
next one, so throughput grows with load instead of collapsing into one commit per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.projector import store_events
from stagewatch.store.engine import Database

log = logging.getLogger("stagewatch.ingest")


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    accepted: int
    duplicate: int


@dataclass(slots=True)
class CommitStats:
    """How many transactions carried how many batches: the evidence that commits are shared."""

    transactions: int = 0
    batches: int = 0
    events: int = 0


@dataclass(slots=True)
class _Pending:
    events: Sequence[Event]
    future: asyncio.Future[BatchOutcome]


def ingest_now(db: Database, registry: PipelineRegistry, events: Sequence[Event]) -> BatchOutcome:
    """Store one batch in its own transaction (the synchronous path, for the CLI and tests)."""
    return _commit(db, registry, [events])[0]


def _commit(
    db: Database, registry: PipelineRegistry, batches: Sequence[Sequence[Event]]
) -> list[BatchOutcome]:
    """One transaction for several batches. An id repeated across batches counts for the first only."""
    owner: dict[str, int] = {}
    unique: list[Event] = []
    for number, batch in enumerate(batches):
        for event in batch:
            if event.id not in owner:
                owner[event.id] = number
                unique.append(event)
    with db.writer.begin() as conn:
        new_ids = store_events(conn, unique, registry, time.time())
    accepted = [0] * len(batches)
    for event_id in new_ids:
        accepted[owner[event_id]] += 1
    return [BatchOutcome(n, len(batch) - n) for n, batch in zip(accepted, batches, strict=True)]


class GroupCommitter:
    """Shares transactions between concurrent ingest requests (see the module docstring)."""

    def __init__(self, db: Database, registry: PipelineRegistry, max_events: int = 5000) -> None:
        self._db = db
        self._registry = registry
        self._max_events = max_events
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.stats = CommitStats()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stagewatch-group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, events: Sequence[Event]) -> BatchOutcome:
        """Queue a batch and wait until it is committed."""
        if self._task is None or self._task.done():
            raise RuntimeError("the group committer is not running")
        future: asyncio.Future[BatchOutcome] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(events, future))
        return await future

    async def _run(self) -> None:
        while True:
            group = await self._next_group()
            await self._commit_group(group)

    async def _next_group(self) -> list[_Pending]:
        group = [await self._queue.get()]
        size = len(group[0].events)
        while not self._queue.empty() and size < self._max_events:
            pending = self._queue.get_nowait()
            group.append(pending)
            size += len(pending.events)
        return group

    async def _commit_group(self, group: list[_Pending]) -> None:
        try:
            outcomes = await asyncio.to_thread(_commit, self._db, self._registry, [p.events for p in group])
        except Exception as exc:
            if len(group) > 1:
                # One batch may be what broke the transaction: retry each alone so the rest still land.
                for pending in group:
                    await self._commit_group([pending])
                return
            log.exception("ingest.commit_failed events=%d", len(group[0].events))
            _settle(group[0].future, error=exc)
            return
        self.stats.transactions += 1
        self.stats.batches += len(group)
        self.stats.events += sum(len(p.events) for p in group)
        for pending, outcome in zip(group, outcomes, strict=True):
            _settle(pending.future, result=outcome)


def _settle(
    future: asyncio.Future[BatchOutcome],
    *,
    result: BatchOutcome | None = None,
    error: Exception | None = None,
) -> None:
    # The requester may have gone away (client disconnect cancels its future); nothing to tell then.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
