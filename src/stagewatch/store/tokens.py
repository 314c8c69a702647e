"""Named queries on API tokens. Only a SHA-256 of each token is stored; no query here returns it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from stagewatch.store.schema import tokens

# Every column but the hash.
_SHOWN = (
    tokens.c.name,
    tokens.c.prefix,
    tokens.c.scopes,
    tokens.c.created_at,
    tokens.c.created_by,
    tokens.c.revoked_at,
    tokens.c.last_used_at,
)


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A stored token as people may see it: never the token, never its hash."""

    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    created_by: str | None
    revoked_at: float | None
    last_used_at: float | None


def _row(row: Mapping[Any, Any]) -> TokenRow:
    return TokenRow(
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


def add(
    conn: Connection,
    *,
    name: str,
    token_hash: str,
    prefix: str,
    scopes: Sequence[str],
    created_at: float,
    created_by: str | None,
) -> bool:
    """Store a new token; False (and nothing written) when the name is taken."""
    values = {
        "name": name, "token_hash": token_hash, "prefix": prefix, "scopes": list(scopes),
        "created_at": created_at, "created_by": created_by,
    }  # fmt: skip
    # A savepoint, so a name taken by a concurrent create leaves the caller's transaction usable.
    try:
        with conn.begin_nested():
            conn.execute(insert(tokens).values(values))
    except IntegrityError:
        return False
    return True


def by_hash(conn: Connection, token_hash: str) -> TokenRow | None:
    row = conn.execute(select(*_SHOWN).where(tokens.c.token_hash == token_hash)).mappings().first()
    return _row(row) if row is not None else None


def by_name(conn: Connection, name: str) -> TokenRow | None:
    row = conn.execute(select(*_SHOWN).where(tokens.c.name == name)).mappings().first()
    return _row(row) if row is not None else None


def all_tokens(conn: Connection) -> list[TokenRow]:
    """Every token, oldest first."""
    query = select(*_SHOWN).order_by(tokens.c.created_at, tokens.c.name)
    return [_row(row) for row in conn.execute(query).mappings()]


def count_active(conn: Connection) -> int:
    query = select(func.count()).select_from(tokens).where(tokens.c.revoked_at.is_(None))
    return int(conn.execute(query).scalar_one())


def revoke(conn: Connection, name: str, at: float) -> bool:
    """Mark the token revoked; False when there is no such active token (compare-and-set, so two
    concurrent revokes record one revocation)."""
    query = update(tokens).where(tokens.c.name == name, tokens.c.revoked_at.is_(None)).values(revoked_at=at)
    return conn.execute(query).rowcount == 1


def touch(conn: Connection, name: str, at: float) -> None:
    """Record a use; never moves ``last_used_at`` back (replicas write in any order)."""
    c = tokens.c
    later = c.last_used_at.is_(None) | (c.last_used_at < at)
    conn.execute(update(tokens).where(c.name == name, later).values(last_used_at=at))
