"""Browser sessions and CSRF tokens, without keeping any token in the browser.

Logging in checks an API token once, with the server's ``TokenVerifier``. The session cookie then holds
only a signed value: the token's *name*, an expiry and a random nonce, with an HMAC-SHA256 over them
under the server's session key. Every request checks the signature and that the named token is still
active, and takes its scopes from the database: revoking the token ends its sessions at once, and a
change of scopes applies on the next page.

The session key comes from ``STAGEWATCH_SESSION_SECRET`` when set (give every replica the same value,
so a session works on each of them and survives restarts); otherwise each server process makes a
random one, and its sessions end when it stops.

A CSRF token is an HMAC of the session's value (or, with auth off, of a random per-browser cookie),
so it is tied to one browser's session and cannot be made by another site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass

from stagewatch.service.auth import Identity, effective_scopes
from stagewatch.store import tokens as token_store
from stagewatch.store.engine import Database

log = logging.getLogger("stagewatch.web")

SESSION_COOKIE = "sw_session"
# With auth off there is no login; this random cookie is what CSRF tokens are bound to instead.
BROWSER_COOKIE = "sw_browser"
SESSION_SECONDS = 12 * 3600
SECRET_ENV = "STAGEWATCH_SESSION_SECRET"


def session_key(secret: str | None) -> bytes:
    """The key sessions are signed with: derived from the configured secret (``Settings.session_secret``,
    ``STAGEWATCH_SESSION_SECRET``), else random for this process."""
    if secret:
        return hashlib.sha256(b"stagewatch-web-session\x00" + secret.encode()).digest()
    log.info("web.session_key_random: dashboard sessions last until this server stops (set %s)", SECRET_ENV)
    return secrets.token_bytes(32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, value: str) -> str:
    return _b64(hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest())


@dataclass(frozen=True, slots=True)
class Session:
    """What a session cookie says: whose token, until when. ``value`` is the cookie itself."""

    name: str
    expires: float
    value: str


def new_session(key: bytes, name: str, now: float | None = None) -> Session:
    expires = float(int((time.time() if now is None else now) + SESSION_SECONDS))
    body = _b64(json.dumps([name, expires, secrets.token_urlsafe(12)]).encode())
    value = f"{body}.{_mac(key, 'session', body)}"
    return Session(name, expires, value)


def read_session(key: bytes, value: str | None, now: float | None = None) -> Session | None:
    """The session a cookie holds, or None when it is missing, forged, malformed or expired."""
    if not value or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    if not hmac.compare_digest(mac, _mac(key, "session", body)):
        return None
    try:
        name, expires, _nonce = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    if not isinstance(name, str) or not isinstance(expires, int | float):
        return None
    if expires < (time.time() if now is None else now):
        return None
    return Session(name, float(expires), value)


def csrf_token(key: bytes, binding: str) -> str:
    """The CSRF token of the session (or browser cookie) ``binding``."""
    return _mac(key, "csrf", binding)


def csrf_ok(key: bytes, binding: str | None, given: str | None) -> bool:
    return bool(binding and given) and hmac.compare_digest(csrf_token(key, binding or ""), given or "")


def new_browser_id() -> str:
    return secrets.token_urlsafe(18)


def active_identity(db: Database, name: str) -> Identity | None:
    """The named token's identity if it is still active (not revoked), else None."""
    with db.reader.connect() as conn:
        row = token_store.by_name(conn, name)
    if row is None or row.revoked_at is not None:
        return None
    return Identity(row.name, effective_scopes(row.scopes))
