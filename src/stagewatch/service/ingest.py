"""Ingest with group commit: concurrent requests share one transaction.

Each request hands its validated records to a ``BatchCommitter`` and awaits the outcome. One writer
task takes everything queued so far (up to ``max_records``), applies it in one transaction on a worker
thread, and answers every waiting request. While a transaction runs, new requests queue up for the
next one, so throughput grows with load instead of collapsing into one commit per request.

The queue is bounded: with ``max_backlog`` records already waiting, ``check_room`` refuses more with
``Overloaded`` (503 with ``Retry-After: 1``), before the request is even parsed. A flood then costs
the server little, its memory stays bounded, and the senders (the SDK, ``stagewatch send-events``)
keep their events and send them again when told.

``GroupCommitter`` is the committer for events (store plus projection); log lines use the same machinery
with their own store function (``stagewatch.service.logs``). A batch of events may name the ``Actor`` who
sent it: each item it creates is then audited (``item.create``) in the same shared transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection

from stagewatch.domain.events import Event, EventType
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.errors import Overloaded
from stagewatch.service.audit import item_created_row
from stagewatch.service.projector import body_of, store_events
from stagewatch.store import audit
from stagewatch.store.audit import Actor
from stagewatch.store.driver import retry_transient
from stagewatch.store.engine import Database

log = logging.getLogger("stagewatch.ingest")

# The wait asked of a sender turned away. Short on purpose: a refusal costs the server little, but a
# sender told to wait too long leaves the writer idle once the backlog is written. Waits worked out from
# the recent write rate did exactly that in benchmarks/flood.py (the rate measured during the storm is
# low), and cut throughput by 60%. Senders refused again back off further (the SDK, with jitter).
RETRY_AFTER_SECONDS = 1
# In a flood, one log line per refusal would be hundreds a second: one per this many seconds instead.
OVERLOAD_LOG_INTERVAL = 10.0


class Identified(Protocol):
    """A record with a client-made id; ingest is idempotent on it."""

    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=Identified)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    accepted: int
    duplicate: int


@dataclass(slots=True)
class CommitStats:
    """How many transactions carried how many batches: the evidence that commits are shared.
    ``events`` counts the records committed (events or log lines), ``shed`` the requests refused
    while the backlog was full."""

    transactions: int = 0
    batches: int = 0
    events: int = 0
    shed: int = 0  # requests turned away because the backlog was full


@dataclass(slots=True)
class _Pending(Generic[R]):
    records: Sequence[R]
    future: asyncio.Future[BatchOutcome]
    actor: Actor | None = None
    # What ``BatchCommitter._prepare`` made of the records before they were queued.
    prepared: Any = None


def share_transaction(
    batches: Sequence[Sequence[R]], store: Callable[[list[R]], set[str]]
) -> list[BatchOutcome]:
    """Store several batches at once with ``store`` (which returns the ids that were new) and tell each
    batch what became of it. An id repeated across batches counts for the first batch only."""
    owner: dict[str, int] = {}
    unique: list[R] = []
    for number, batch in enumerate(batches):
        for record in batch:
            if record.id not in owner:
                owner[record.id] = number
                unique.append(record)
    new_ids = store(unique)
    accepted = [0] * len(batches)
    for record_id in new_ids:
        accepted[owner[record_id]] += 1
    return [BatchOutcome(n, len(batch) - n) for n, batch in zip(accepted, batches, strict=True)]


def ingest_now(
    db: Database, registry: PipelineRegistry, events: Sequence[Event], actor: Actor | None = None
) -> BatchOutcome:
    """Store one batch in its own transaction (the synchronous path, for the CLI and tests)."""
    return _commit(db, registry, [events], [actor])[0]


def _commit(
    db: Database,
    registry: PipelineRegistry,
    batches: Sequence[Sequence[Event]],
    actors: Sequence[Actor | None] = (),
    bodies: Mapping[str, str] | None = None,
) -> list[BatchOutcome]:
    """One transaction for several batches of events; ``actors`` (when given) sent them, one per batch;
    ``bodies`` holds the stored JSON of events, by id, where it was made already."""

    creators = _creators(batches, actors)

    def store(unique: list[Event]) -> set[str]:
        with db.write() as conn:
            now = time.time()
            new_ids = store_events(conn, unique, registry, now, db.projection_cache, bodies)
            if creators:
                _audit_creations(conn, unique, new_ids, creators, now)
            return new_ids

    return share_transaction(batches, store)


def _creators(batches: Sequence[Sequence[Event]], actors: Sequence[Actor | None]) -> dict[str, Actor]:
    """Who sent each ``item.created`` event, by event id. As in ``share_transaction``, an id sent in
    several batches belongs to the first."""
    if not any(actors):
        return {}
    sender: dict[str, Actor | None] = {}
    for batch, actor in zip(batches, actors, strict=False):
        for event in batch:
            if event.type is EventType.ITEM_CREATED:
                sender.setdefault(event.id, actor)
    return {event_id: actor for event_id, actor in sender.items() if actor is not None}


def _audit_creations(
    conn: Connection, events: Sequence[Event], new_ids: set[str], creators: dict[str, Actor], at: float
) -> None:
    """One ``item.create`` audit row per new ``item.created`` event; a duplicate created nothing."""
    rows = [
        item_created_row(event, creators[event.id], at)
        for event in events
        if event.id in creators and event.id in new_ids
    ]
    audit.record_many(conn, rows)


class BatchCommitter(Generic[R]):
    """Shares transactions between concurrent ingest requests (see the module docstring).

    ``commit`` stores several batches in one transaction and returns one outcome per batch; it runs on a
    worker thread. ``max_backlog`` bounds the records waiting (0: no bound). ``kind`` and ``unit`` name
    the records in log lines, ``name`` the asyncio task.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Sequence[R]]], list[BatchOutcome]],
        max_records: int,
        *,
        max_backlog: int = 0,
        kind: str = "ingest",
        unit: str = "events",
        name: str = "stagewatch-group-commit",
    ) -> None:
        self._commit = commit
        self._max_records = max_records
        self.max_backlog = max_backlog
        self._kind = kind
        self.unit = unit
        self._name = name
        self._queue: asyncio.Queue[_Pending[R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._backlog = 0
        self._refused_unlogged = 0
        self._overload_logged_at = -OVERLOAD_LOG_INTERVAL
        self._refused_at: float | None = None
        self.stats = CommitStats()

    @property
    def backlog(self) -> int:
        """Records submitted and not yet answered: waiting in the queue or being written."""
        return self._backlog

    def check_room(self) -> None:
        """``Overloaded`` when ``max_backlog`` records are waiting already; call it before parsing a
        request, so that turning a sender away costs next to nothing."""
        if not self.max_backlog or self._backlog < self.max_backlog:
            return
        self.stats.shed += 1
        self._refused_at = time.monotonic()
        self._log_refusal()
        raise Overloaded(
            f"the server is behind: {self._backlog:,} {self.unit} are waiting to be written "
            f"(the limit is {self.max_backlog:,}); nothing of this request was stored, "
            f"send it again in {RETRY_AFTER_SECONDS} s",
            retry_after=RETRY_AFTER_SECONDS,
        )

    def refused_within(self, seconds: float) -> bool:
        """Whether a sender was turned away in the last ``seconds``."""
        return self._refused_at is not None and time.monotonic() - self._refused_at < seconds

    def _log_refusal(self) -> None:
        """The first refusal at once, then one line per ``OVERLOAD_LOG_INTERVAL`` counting them."""
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._overload_logged_at >= OVERLOAD_LOG_INTERVAL:
            log.warning(
                "%s.overloaded backlog=%d limit=%d refused=%d", self._kind, self._backlog, self.max_backlog,
                self._refused_unlogged,
            )  # fmt: skip
            self._overload_logged_at, self._refused_unlogged = now, 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, records: Sequence[R], actor: Actor | None = None) -> BatchOutcome:
        """Queue a batch (sent by ``actor``, when known) and wait until it is committed."""
        if self._task is None or self._task.done():
            raise RuntimeError("the group committer is not running")
        future: asyncio.Future[BatchOutcome] = asyncio.get_running_loop().create_future()
        pending = _Pending(records, future, actor, self._prepare(records))
        self._backlog += len(records)
        await self._queue.put(pending)
        return await future

    def _prepare(self, records: Sequence[R]) -> Any:
        """Work on a batch that needs no transaction, done on the event loop as it is submitted (see
        ``GroupCommitter``); what it returns reaches ``_store`` with the batch. Nothing by default."""
        return None

    async def _run(self) -> None:
        while True:
            group = await self._next_group()
            await self._commit_group(group)

    async def _next_group(self) -> list[_Pending[R]]:
        group = [await self._queue.get()]
        size = len(group[0].records)
        while not self._queue.empty() and size < self._max_records:
            pending = self._queue.get_nowait()
            group.append(pending)
            size += len(pending.records)
        return group

    async def _commit_group(self, group: list[_Pending[R]]) -> None:
        try:
            outcomes = await self._store_retrying(group)
        except Exception as exc:
            if len(group) > 1:
                # One batch may be what broke the transaction: retry each alone so the rest still land.
                for pending in group:
                    await self._commit_group([pending])
                return
            log.exception("%s.commit_failed records=%d", self._kind, len(group[0].records))
            self._answer(group[0], error=exc)
            return
        records = sum(len(p.records) for p in group)
        self.stats.transactions += 1
        self.stats.batches += len(group)
        self.stats.events += records
        for pending, outcome in zip(group, outcomes, strict=True):
            self._answer(pending, result=outcome)

    def _answer(
        self, pending: _Pending[R], *, result: BatchOutcome | None = None, error: Exception | None = None
    ) -> None:
        self._backlog -= len(pending.records)
        _settle(pending.future, result=result, error=error)

    async def _store_retrying(self, group: list[_Pending[R]]) -> list[BatchOutcome]:
        """``_store`` on a worker thread, tried again when PostgreSQL aborted it for a deadlock or a
        serialization failure (``driver.retry_transient``): it was rolled back whole, and the records
        are idempotent on their ids."""
        return await asyncio.to_thread(retry_transient, functools.partial(self._store, group), self._kind)

    def _store(self, group: Sequence[_Pending[R]]) -> list[BatchOutcome]:
        """Commit a group (on a worker thread): one outcome per batch."""
        return self._commit([p.records for p in group])


class GroupCommitter(BatchCommitter[Event]):
    """The committer for events: each shared transaction stores the events, updates the projection and
    audits the items created by batches whose sender is known.

    Each event's stored JSON is made when its batch is submitted, on the event loop, rather than in the
    transaction: the single writer thread is what bounds ingest, and the loop has time while the
    writer is inside SQLite (which lets go of the GIL).
    """

    def __init__(
        self, db: Database, registry: PipelineRegistry, max_events: int = 5000, *, max_backlog: int = 0
    ) -> None:
        self._commit_sent = functools.partial(_commit, db, registry)
        super().__init__(self._commit_sent, max_events, max_backlog=max_backlog)

    def _prepare(self, records: Sequence[Event]) -> dict[str, str]:
        return {event.id: body_of(event) for event in records}

    def _store(self, group: Sequence[_Pending[Event]]) -> list[BatchOutcome]:
        bodies: dict[str, str] = {}
        for pending in group:
            bodies.update(pending.prepared or {})
        return self._commit_sent([p.records for p in group], [p.actor for p in group], bodies)


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
