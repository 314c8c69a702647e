"""Writing what the control plane decides into the event log, in the decision's own transaction, so an
item's history and status show every decision next to the workers' own reports."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from stagewatch.domain.events import Event, EventType
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.projector import store_events
from stagewatch.store.engine import Database
from stagewatch.store.projection_cache import ProjectionCache

# What the control plane writes as a note may be read by people: keep it to the Event's own limit.
MAX_NOTE = 10_000


def fact(event_type: EventType, item_id: str, at: float, **fields: Any) -> Event:
    """A control-plane event. Ids are random: each decision is a fact of its own."""
    note = fields.pop("note", None)
    return Event(
        id=f"sw-{uuid.uuid4().hex}",
        type=event_type,
        item_id=item_id,
        time=at,
        note=note[:MAX_NOTE] if isinstance(note, str) else note,
        **{name: value for name, value in fields.items() if value is not None},
    )


class Facts:
    """The events of the decisions in one transaction, projected together when it ends: one
    ``store_events`` for a whole group of decisions (see ``committer``) instead of one each.

    A decision reads the projection in places (a run's status, an item's last control fact). Before a
    decision that may read what pending events change, ``flush`` projects them, so it sees exactly what
    it would have seen had every decision before it committed alone."""

    def __init__(self, conn: Connection, registry: PipelineRegistry, cache: ProjectionCache | None) -> None:
        self.conn = conn
        self._registry = registry
        self._cache = cache
        self._pending: list[Event] = []
        self._received_at = 0.0
        # What the pending events name, so ``concern`` costs a few set lookups however many are pending.
        self._items: set[str] = set()
        self._runs: set[str] = set()
        self._run_prefixes: set[str] = set()  # "a" and "a/b" for a run "a/b/1"

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def add(self, events: Iterable[Event], now: float) -> None:
        for event in events:
            self._pending.append(event)
            self._items.add(event.item_id)
            if event.run_id is not None:
                self._runs.add(event.run_id)
                parts = event.run_id.split("/")
                self._run_prefixes.update("/".join(parts[:n]) for n in range(1, len(parts)))
        self._received_at = now

    def concern(self, item_id: str | None = None, run_id: str | None = None) -> bool:
        """Whether a pending event names this item, this run, or a run named after this item (the
        names ``begin`` checks before it picks one)."""
        if item_id is not None and (item_id in self._items or item_id in self._run_prefixes):
            return True
        return run_id is not None and run_id in self._runs

    def mark(self) -> int:
        """Where the next decision's events start: ``forget(mark)`` drops them if it fails."""
        return len(self._pending)

    def forget(self, mark: int) -> None:
        kept = self._pending[:mark]
        self._clear()
        self.add(kept, self._received_at)

    def changed_outside(self, item_id: str) -> None:
        """The item's row was written directly (a stuck mark), not through the projection: the cached
        copy is dropped, so what is projected next starts from the row."""
        if self._cache is not None:
            self._cache.forget([item_id])

    def flush(self) -> None:
        if self._pending:
            store_events(self.conn, self._pending, self._registry, self._received_at, self._cache)
            self._clear()

    def _clear(self) -> None:
        self._pending = []
        self._items.clear()
        self._runs.clear()
        self._run_prefixes.clear()


@contextmanager
def decision_transaction(db: Database, registry: PipelineRegistry) -> Iterator[Facts]:
    """A writer transaction for decisions, whose events are projected at its end.

    On SQLite it uses the writer's projection cache as ingest does (validated first, sealed after the
    last write, dropped if anything fails), so the item a decision is about need not be read back, and
    the decisions do not make ingest read back everything it had cached."""
    with db.write() as conn:
        facts = Facts(conn, registry, db.projection_cache)
        yield facts
        facts.flush()
