"""Named queries for dependency health: the circuit of each dependency, one row per name in
``dependencies``. A dependency with no row has never been observed: ``unknown``, which is not down."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from stagewatch.domain.circuit import DependencyState
from stagewatch.store import schema
from stagewatch.store.driver import Shape, any_of, execute, is_postgres, upsert_insert

_table = schema.dependencies
_SHAPE = Shape.of(_table)


def read_states(conn: Connection, names: Iterable[str]) -> dict[str, DependencyState]:
    """The state of each of ``names``, in that order; a name without a row is ``unknown``. Read through
    the driver: ``begin`` asks for its stage's dependencies on every decision."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    where, params = any_of(conn, "name", wanted)
    rows = execute(conn, f"SELECT {_SHAPE.columns} FROM dependencies WHERE {where}", params).fetchall()
    found = {state.name: state for state in (_from_row(_SHAPE.row(conn, row)) for row in rows)}
    return {name: found.get(name) or DependencyState(name) for name in wanted}


def change_state(
    conn: Connection, name: str, change: Callable[[DependencyState], DependencyState]
) -> tuple[DependencyState, DependencyState]:
    """Apply ``change`` (a pure transition) to one dependency's stored state and write the result, in the
    caller's transaction. On PostgreSQL the row is locked first (a placeholder row is inserted when there
    is none, since a missing row cannot be locked), so replicas reporting at once never lose an update;
    SQLite has one writer at a time. Returns the state before and after."""
    before = _locked(conn, name)
    after = change(before)
    if after != before:
        write_state(conn, after)
    return before, after


def write_state(conn: Connection, state: DependencyState) -> None:
    """Insert or overwrite one dependency's row."""
    row = _to_row(state)
    stmt = upsert_insert(conn, _table).values(row)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"], set_={k: v for k, v in row.items() if k != "name"}
        )
    )


def _locked(conn: Connection, name: str) -> DependencyState:
    query = select(_table).where(_table.c.name == name)
    if is_postgres(conn):
        placeholder = _to_row(DependencyState(name))
        conn.execute(
            upsert_insert(conn, _table).values(placeholder).on_conflict_do_nothing(index_elements=["name"])
        )
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return _from_row(row) if row is not None else DependencyState(name)


def _to_row(state: DependencyState) -> dict[str, Any]:
    return {
        "name": state.name,
        "state": state.state,
        "failures": state.failures,
        "since": state.since,
        "checked_at": state.checked_at,
        "next_probe_at": state.next_probe_at,
        "message": state.message,
    }


def _from_row(row: Mapping[Any, Any]) -> DependencyState:
    return DependencyState(
        name=row["name"],
        state=row["state"],
        failures=int(row["failures"]),
        since=float(row["since"]),
        checked_at=row["checked_at"],
        next_probe_at=row["next_probe_at"],
        message=row["message"],
    )
