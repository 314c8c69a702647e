"""API tokens over HTTP (scope ``admin``): create one (its secret is in the answer, once), list them,
revoke one. Creating and revoking are audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import Admin, forget_token
from stagewatch.api.context import Ctx
from stagewatch.service import auth

router = APIRouter(tags=["tokens"])


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description=f"unique; {auth.NAME_RULE}")
    scopes: list[str] = Field(description=f"any of {', '.join(auth.SCOPES)}; admin implies every scope")


class Revocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=10_000)


@router.post("/v1/tokens", summary="Create an API token; the answer is the only place it is ever shown")
async def create_token(who: Admin, ctx: Ctx, body: NewToken) -> JSONResponse:
    created = await run_in_threadpool(auth.create_token, ctx.db, body.name, body.scopes, who.actor)
    return JSONResponse({**auth.token_view(created.info), "token": created.token}, status_code=201)


@router.get("/v1/tokens", summary="Every API token: name, scopes, when made, last used, revoked")
async def list_tokens(who: Admin, ctx: Ctx) -> dict[str, Any]:
    found = await run_in_threadpool(auth.list_tokens, ctx.db)
    return {"tokens": [auth.token_view(info) for info in found]}


@router.post(
    "/v1/tokens/{name}/revoke",
    summary="Revoke an API token",
    description="This server refuses it at once; other replicas within STAGEWATCH_AUTH_CACHE_SECONDS.",
)
async def revoke_token(
    name: str, who: Admin, ctx: Ctx, request: Request, body: Annotated[Revocation | None, Body()] = None
) -> dict[str, Any]:
    reason = body.reason if body else None
    info = await run_in_threadpool(auth.revoke_token, ctx.db, name, who.actor, reason=reason)
    forget_token(request, name)
    return auth.token_view(info)
