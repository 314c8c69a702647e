"""Who is calling: the ``Principal`` behind a request, and the scope each route requires.

Handlers declare ``who: Reader`` (or ``Ingester``, ``Operator``, ``Admin``) to require that scope and to
learn the caller's name (the token's name, written to the audit trail) and address. The token comes in
``Authorization: Bearer <token>``: none or a bad one is a 401, a token without the scope a 403. With auth
off (``STAGEWATCH_AUTH=false``, loopback only) every caller is ``anonymous`` with every scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, context
from stagewatch.errors import Forbidden, Unauthenticated
from stagewatch.service.auth import ADMIN, ALL_SCOPES, INGEST, OPERATE, READ, Identity, TokenVerifier
from stagewatch.store.audit import Actor

__all__ = [
    "ADMIN", "ANONYMOUS", "INGEST", "OPERATE", "READ", "Admin", "Ingester", "Operator", "Principal", "Reader",
    "forget_token", "install_auth",
]  # fmt: skip

ANONYMOUS = "anonymous"
_HOW = "send 'Authorization: Bearer <token>' (the CLI: --token or STAGEWATCH_TOKEN)"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: the token's name, its effective scopes (``admin`` includes all) and its address."""

    name: str
    scopes: frozenset[str]
    source: str | None

    @property
    def actor(self) -> Actor:
        """The caller as the audit trail records it."""
        return Actor(self.name, self.source)


_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="sw_...",
    description="An API token: `stagewatch token create NAME --scope read`.",
)


def install_auth(app: FastAPI, ctx: AppContext) -> None:
    """Give the app the verifier its requests' tokens are checked with (once, at start-up)."""
    app.state.token_verifier = TokenVerifier(ctx.db, ctx.settings.auth_cache_seconds)


def forget_token(request: Request, name: str) -> None:
    """Stop trusting a token this server has just revoked, without waiting for its cache entry to expire."""
    _verifier(request).forget(name)


def _verifier(request: Request) -> TokenVerifier:
    found: TokenVerifier = request.app.state.token_verifier
    return found


async def _identify(
    request: Request, ctx: AppContext, bearer: HTTPAuthorizationCredentials | None
) -> Principal:
    source = request.client.host if request.client else None
    if not ctx.settings.auth:
        return Principal(ANONYMOUS, ALL_SCOPES, source)
    if bearer is None:
        raise Unauthenticated(_missing_token_message(request))
    identity = await _verified(_verifier(request), bearer.credentials)
    return Principal(identity.name, identity.scopes, source)


async def _verified(verifier: TokenVerifier, token: str) -> Identity:
    # A token verified a moment ago costs a hash and a dict lookup; only the rest go to the database.
    identity = verifier.cached(token)
    if identity is None:
        identity = await run_in_threadpool(verifier.verify, token)
    return identity


def _missing_token_message(request: Request) -> str:
    if request.headers.get("authorization"):
        return f"the Authorization header is not a bearer token; {_HOW}"
    return f"this needs an API token; {_HOW}"


def _require(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        ctx: Annotated[AppContext, Depends(context)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        who = await _identify(request, ctx, bearer)
        if scope not in who.scopes:
            granted = ", ".join(sorted(who.scopes)) or "none"
            raise Forbidden(f"this needs the {scope!r} scope; token {who.name!r} has: {granted}", scope=scope)
        return who

    return dependency


Ingester = Annotated[Principal, Depends(_require(INGEST))]
Reader = Annotated[Principal, Depends(_require(READ))]
Operator = Annotated[Principal, Depends(_require(OPERATE))]
Admin = Annotated[Principal, Depends(_require(ADMIN))]
