"""Group commit for decisions (begin, complete, heartbeat) on SQLite.

On SQLite every decision alone pays for a whole transaction: BEGIN IMMEDIATE, the projection cache's
checks, projecting its events (a dozen statements) and COMMIT, several times what the decision itself
costs. So the decisions of concurrent requests share a transaction, like ingest's group commit: one task
takes everything queued, and a worker thread makes the decisions one after another (each sees what
those before it wrote, so limits and idempotency hold exactly as with one transaction each), projects
all their events with one ``store_events`` and commits once. A decision that raises is rolled back
alone (a savepoint each) and its caller gets the error. If the shared transaction itself fails, each
decision is made again alone.

On PostgreSQL each decision keeps a transaction of its own: several replicas lock limit keys per
decision, and one transaction holding many decisions' locks could deadlock with another replica's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from anyio import to_thread

from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.control.facts import Facts, decision_transaction
from stagewatch.store.driver import retry_transient, savepoint
from stagewatch.store.engine import Database

log = logging.getLogger("stagewatch.control")

T = TypeVar("T")


def _never(facts: Facts) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Job(Generic[T]):
    """One decision to make on an open transaction's ``Facts``. ``reads_pending`` says whether it may read
    the projection of events that earlier decisions in the transaction left pending (see ``Facts``)."""

    make: Callable[[Facts], T]
    reads_pending: Callable[[Facts], bool] = _never


@dataclass(slots=True)
class DecisionStats:
    """How many transactions carried how many decisions: the evidence that commits are shared."""

    transactions: int = 0
    decisions: int = 0


@dataclass(slots=True)
class _Queued:
    decision: Job[Any]
    future: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: Any = None
    error: BaseException | None = None


class DecisionCommitter:
    """Makes the API's decisions: grouped into shared transactions on SQLite, alone on PostgreSQL.

    It needs no start or stop: a drain task runs while decisions are queued and ends when none are.
    """

    def __init__(self, db: Database, registry: PipelineRegistry, max_decisions: int = 200) -> None:
        self.db = db
        self.registry = registry
        # Bounds how long one transaction holds SQLite's write lock (a decision takes ~0.2 ms).
        self.max_decisions = max_decisions
        self.stats = DecisionStats()
        self._queue: list[_Queued] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def serves(self, db: Database) -> bool:
        """Whether this committer can take decisions on ``db`` from the running event loop (its queue
        and futures belong to the first loop that used it)."""
        return self.db is db and self._loop in (None, asyncio.get_running_loop())

    async def decide(self, decision: Job[T]) -> T:
        if self.db.is_postgres:
            return await to_thread.run_sync(self._alone_or_raise, decision)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("a DecisionCommitter serves the event loop that first used it")
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(_Queued(decision, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="stagewatch-decisions")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            group = self._queue[: self.max_decisions]
            del self._queue[: self.max_decisions]
            try:
                outcomes = await to_thread.run_sync(self._commit, [q.decision for q in group])
            except BaseException:  # cancelled (the server is stopping): nobody may wait forever
                for queued in group + self._queue:
                    queued.future.cancel()
                self._queue.clear()
                raise
            _settle_all(group, outcomes)

    def _commit(self, decisions: Sequence[Job[Any]]) -> list[_Outcome]:
        """Make a group of decisions (on a worker thread): one outcome each."""
        try:
            outcomes = self._together(decisions)
        except Exception:
            if len(decisions) > 1:
                log.warning("decisions.group_failed decisions=%d", len(decisions), exc_info=True)
            return [self._alone(decision) for decision in decisions]
        self.stats.transactions += 1
        self.stats.decisions += len(decisions)
        return outcomes

    def _together(self, decisions: Sequence[Job[Any]]) -> list[_Outcome]:
        outcomes = []
        with decision_transaction(self.db, self.registry) as facts:
            for decision in decisions:
                if decision.reads_pending(facts):
                    facts.flush()
                outcomes.append(_step(facts, decision))
        return outcomes

    def _alone(self, decision: Job[Any]) -> _Outcome:
        try:
            return _Outcome(self._alone_or_raise(decision))
        except Exception as exc:
            return _Outcome(error=exc)

    def _alone_or_raise(self, decision: Job[T]) -> T:
        """One decision in a transaction of its own; made again if PostgreSQL aborts it for a deadlock
        or serialization failure (``retry_transient``), rather than answering the worker 503."""
        result = retry_transient(functools.partial(self._make, decision), "decisions")
        self.stats.transactions += 1
        self.stats.decisions += 1
        return result

    def _make(self, decision: Job[T]) -> T:
        with decision_transaction(self.db, self.registry) as facts:
            return decision.make(facts)


def _step(facts: Facts, decision: Job[Any]) -> _Outcome:
    """One decision of a shared transaction; if it raises, what it wrote and its events are undone."""
    mark = facts.mark()
    try:
        with savepoint(facts.conn):
            return _Outcome(decision.make(facts))
    except Exception as exc:
        facts.forget(mark)
        return _Outcome(error=exc)


def _settle_all(group: Sequence[_Queued], outcomes: Sequence[_Outcome]) -> None:
    for queued, outcome in zip(group, outcomes, strict=True):
        # The requester may have gone away (a client disconnect cancels its future): nothing to tell.
        if queued.future.done():
            continue
        if outcome.error is not None:
            queued.future.set_exception(outcome.error)
        else:
            queued.future.set_result(outcome.result)
