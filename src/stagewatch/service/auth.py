"""API tokens: making, listing and revoking them (each audited), and verifying them on every request.

A token is ``sw_`` followed by 32 random bytes in URL-safe base64. Only its SHA-256 is stored: a token is
256 random bits, so a slow password hash would add nothing. Scopes: ``ingest``, ``read``, ``operate``,
``admin``; ``admin`` implies every scope and ``operate`` implies ``read``.

Verification sits on the ingest hot path, so ``TokenVerifier`` trusts a token it verified for a few
seconds without asking the database again. A revoked token is therefore refused by the server that
revoked it at once, and by other servers within that time. ``last_used_at`` is written at most once a
minute per token.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from stagewatch.domain.events import iso
from stagewatch.errors import Conflict, InvalidShape, NotFound, Unauthenticated
from stagewatch.store import audit
from stagewatch.store import tokens as token_store
from stagewatch.store.audit import Actor
from stagewatch.store.engine import Database
from stagewatch.store.tokens import TokenRow

log = logging.getLogger("stagewatch.auth")

INGEST, READ, OPERATE, ADMIN = "ingest", "read", "operate", "admin"
SCOPES = (INGEST, READ, OPERATE, ADMIN)
ALL_SCOPES = frozenset(SCOPES)
_IMPLIED = {ADMIN: ALL_SCOPES, OPERATE: frozenset({OPERATE, READ})}
TOKEN_PREFIX = "sw_"
# Shown in lists so people can tell tokens apart: 7 random characters, far too few to guess the rest.
SHOWN_PREFIX_CHARS = 10
# A real token is 46 characters; anything much longer is not worth hashing.
MAX_TOKEN_CHARS = 100
TOUCH_INTERVAL = 60.0
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
NAME_RULE = "1 to 64 letters, digits and . _ : @ -, starting with a letter or digit"


def effective_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes granted, each with the scopes it implies."""
    return frozenset(implied for scope in scopes for implied in _IMPLIED.get(scope, (scope,)))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token belongs to: its name and its effective scopes."""

    name: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """A new token: ``token`` exists only here, once; the database keeps its hash."""

    token: str
    info: TokenRow


# --- managing tokens ------------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidShape(f"token name {name!r} is not valid: use {NAME_RULE}", field="name")
    return name


def check_scopes(scopes: Sequence[str]) -> list[str]:
    """The scopes without repeats, in their canonical order; InvalidShape for none or an unknown one."""
    unknown = [scope for scope in scopes if scope not in ALL_SCOPES]
    if unknown:
        raise InvalidShape(f"unknown scope {unknown[0]!r}; one of: {', '.join(SCOPES)}", field="scopes")
    if not scopes:
        raise InvalidShape(f"a token needs at least one scope: {', '.join(SCOPES)}", field="scopes")
    return [scope for scope in SCOPES if scope in scopes]


def create_token(
    db: Database, name: str, scopes: Sequence[str], actor: Actor, *, now: float | None = None
) -> CreatedToken:
    """Make and store a token, and audit it (``token.create``) in the same transaction."""
    name, granted = check_name(name), check_scopes(scopes)
    token, now = new_token(), time.time() if now is None else now
    with db.writer.begin() as conn:
        added = token_store.add(
            conn, name=name, token_hash=hash_token(token), prefix=token[:SHOWN_PREFIX_CHARS],
            scopes=granted, created_at=now, created_by=actor.name,
        )  # fmt: skip
        if not added:
            raise Conflict(f"a token named {name!r} exists already; choose another name", field="name")
        audit.record(
            conn,
            at=now,
            action="token.create",
            target=name,
            params={"scopes": granted},
            actor=actor.name,
            source=actor.source,
        )
        info = token_store.by_name(conn, name)
    assert info is not None, "the token was added in this transaction"
    log.info("auth.token_created token=%s scopes=%s actor=%s", name, ",".join(granted), actor.name)
    return CreatedToken(token, info)


def list_tokens(db: Database) -> list[TokenRow]:
    with db.reader.connect() as conn:
        return token_store.all_tokens(conn)


def revoke_token(
    db: Database, name: str, actor: Actor, *, reason: str | None = None, now: float | None = None
) -> TokenRow:
    """Revoke the token and audit it (``token.revoke``). Revoking a revoked token changes nothing and
    is not audited again; an unknown name is NotFound."""
    now = time.time() if now is None else now
    with db.writer.begin() as conn:
        if token_store.revoke(conn, name, now):
            audit.record(
                conn,
                at=now,
                action="token.revoke",
                target=name,
                reason=reason,
                actor=actor.name,
                source=actor.source,
            )
            log.info("auth.token_revoked token=%s actor=%s", name, actor.name)
        info = token_store.by_name(conn, name)
    if info is None:
        raise NotFound(f"no token named {name!r}")
    return info


def active_token_count(db: Database) -> int:
    with db.reader.connect() as conn:
        return token_store.count_active(conn)


def token_view(info: TokenRow) -> dict[str, Any]:
    """A token as the API shows it: never the token or its hash."""
    return {
        "name": info.name,
        "prefix": info.prefix,
        "scopes": list(info.scopes),
        "active": info.revoked_at is None,
        "created_at": iso(info.created_at),
        "created_by": info.created_by,
        "revoked_at": iso(info.revoked_at),
        "last_used_at": iso(info.last_used_at),
    }


# --- verifying tokens -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Verified:
    identity: Identity
    until: float


class TokenVerifier:
    """Checks bearer tokens against the database and trusts each verified one for ``ttl`` seconds.

    ``cached`` does no I/O, so the event loop may call it; ``verify`` reads (and now and then writes)
    the database, so it belongs on a worker thread. Unknown and revoked tokens are never cached: a
    token created a moment ago works at once.
    """

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self._db = db
        self._ttl = ttl
        self._verified: dict[str, _Verified] = {}
        self._touched: dict[str, float] = {}

    def cached(self, token: str) -> Identity | None:
        """The token's identity if it was verified less than ``ttl`` seconds ago, else None."""
        entry = self._verified.get(hash_token(token))
        if entry is None or entry.until < time.monotonic():
            return None
        return entry.identity

    def verify(self, token: str) -> Identity:
        """The token's identity, read from the database; Unauthenticated for an unknown or revoked one."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"not a stagewatch API token (they start with {TOKEN_PREFIX!r})")
        token_hash = hash_token(token)
        with self._db.reader.connect() as conn:
            info = token_store.by_hash(conn, token_hash)
        # One message for both: a caller holding a revoked token learns nothing it could use.
        if info is None or info.revoked_at is not None:
            raise Unauthenticated("unknown or revoked API token")
        identity = Identity(info.name, effective_scopes(info.scopes))
        self._verified[token_hash] = _Verified(identity, time.monotonic() + self._ttl)
        self._touch(info)
        return identity

    def forget(self, name: str) -> None:
        """Stop trusting the named token now (this server revoked it)."""
        self._verified = {key: e for key, e in self._verified.items() if e.identity.name != name}

    def _touch(self, info: TokenRow) -> None:
        now = time.time()
        last = self._touched.get(info.name, info.last_used_at or -math.inf)
        if now - last < TOUCH_INTERVAL:
            return
        self._touched[info.name] = now
        try:
            with self._db.writer.begin() as conn:
                token_store.touch(conn, info.name, now)
        except SQLAlchemyError:
            # last_used_at is a hint for people; failing to write it must never refuse a valid token.
            log.warning("auth.touch_failed token=%s", info.name, exc_info=True)
