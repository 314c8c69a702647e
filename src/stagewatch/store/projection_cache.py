"""The projection as this process last committed it, so SQLite's single writer need not read back the
items and runs it is about to change (reading them back was the largest cost of ingest).

It is only ever trusted while nothing else has written. After its own writes the writer seals the cache
with a stamp of its connection: the connection's identity, SQLite's ``PRAGMA data_version`` (which
changes when any *other* connection commits) and ``total_changes()`` (which counts every row this
connection changes). Before the next transaction a different stamp — another process wrote, a
different connection, or anything else wrote through this one — drops everything. A failed
transaction drops everything too, since the cached objects were changed in place before the commit.
``Database.write`` is the transaction that does all this; every writer that should keep the cache in use
(ingest, log lines, decisions, operators' actions, the watchdog) writes through it.
PostgreSQL, with several replicas writing, never uses it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from sqlalchemy import Connection

from stagewatch.domain.projection import ItemState, RunState


class ProjectionCache:
    """Items with all their runs, least recently used dropped first."""

    def __init__(self, max_items: int = 50_000) -> None:
        self._max_items = max_items
        self._items: OrderedDict[str, ItemState] = OrderedDict()
        self._runs: dict[str, dict[str, RunState]] = {}
        self._owner: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._runs.clear()
        self._owner.clear()
        self._stamp = None

    def validate(self, conn: Connection) -> None:
        """Drop everything unless nothing has been written since the cache was sealed."""
        if self._stamp is None or _stamp(conn) != self._stamp:
            self.clear()

    def seal(self, conn: Connection) -> None:
        """Record that the cache matches the database as ``conn`` has just written it."""
        self._stamp = _stamp(conn)

    def forget(self, item_ids: Iterable[str]) -> None:
        """Drop these items (and their runs): a writer changed their rows without the cache."""
        for item_id in item_ids:
            self._forget(item_id)

    def owner_of(self, run_id: str) -> str | None:
        """The item a cached run is filed under; None when the run is not cached."""
        return self._owner.get(run_id)

    def get(self, item_ids: Iterable[str]) -> tuple[dict[str, ItemState], dict[str, RunState]]:
        """The cached ones among ``item_ids``, and every run of each."""
        items: dict[str, ItemState] = {}
        runs: dict[str, RunState] = {}
        for item_id in item_ids:
            item = self._items.get(item_id)
            if item is not None:
                self._items.move_to_end(item_id)
                items[item_id] = item
                runs.update(self._runs[item_id])
        return items, runs

    def put(self, items: Mapping[str, ItemState], runs_by_item: Mapping[str, list[RunState]]) -> None:
        """Remember these items, each with all of its runs."""
        for item_id, item in items.items():
            self._forget(item_id)
            self._items[item_id] = item
            self._runs[item_id] = {run.run_id: run for run in runs_by_item.get(item_id, [])}
            self._owner.update((run_id, item_id) for run_id in self._runs[item_id])
        while len(self._items) > self._max_items:
            self._forget(next(iter(self._items)))

    def _forget(self, item_id: str) -> None:
        self._items.pop(item_id, None)
        for run_id in self._runs.pop(item_id, {}):
            if self._owner.get(run_id) == item_id:
                del self._owner[run_id]


def _stamp(conn: Connection) -> tuple[int, int, int]:
    version = conn.exec_driver_sql("PRAGMA data_version").scalar_one()
    changes = conn.exec_driver_sql("SELECT total_changes()").scalar_one()
    return id(conn.connection.dbapi_connection), int(version), int(changes)
