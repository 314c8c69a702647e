"""The decision API for workers: begin a run, heartbeat it, complete it (scope ``ingest``); and stop a
run (scope ``operate``). See docs/guardrails.md."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import Ingester, Operator
from stagewatch.api.context import Ctx
from stagewatch.domain.events import ErrorInfo, iso
from stagewatch.errors import InvalidShape
from stagewatch.service.control import begin, completion, heartbeats
from stagewatch.service.control.begin import BeginRequest, BeginResult
from stagewatch.service.control.committer import DecisionCommitter
from stagewatch.service.control.heartbeats import BeatReport
from stagewatch.service.control.operate import stop_run
from stagewatch.store.audit import Actor

router = APIRouter(tags=["runs"])

Text = Annotated[str, Field(min_length=1, max_length=256)]


async def decisions(request: Request, ctx: Ctx) -> DecisionCommitter:
    """The app's decision committer, made on first use: it needs no start or stop (see committer).
    Async so FastAPI does not hand it to a worker thread (a thread hop per request)."""
    committer: DecisionCommitter | None = getattr(request.app.state, "decisions", None)
    if committer is None or not committer.serves(ctx.db):
        committer = request.app.state.decisions = DecisionCommitter(ctx.db, ctx.registry)
    return committer


Decisions = Annotated[DecisionCommitter, Depends(decisions)]


class BeginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Text
    item_id: Text
    pipeline: Text | None = None
    key: Text | None = Field(default=None, description="idempotency key; default: the item id")
    payload: Any = Field(default=None, description="kept for the dead-letter queue and replays")
    run_id: Text | None = Field(default=None, description="the id for the first attempt")
    account: Text | None = None
    scenario: Text | None = None
    worker: Text | None = None
    revision: Text | None = None
    trace_id: str | None = Field(default=None, pattern="^[0-9a-f]{32}$")
    span_id: str | None = Field(default=None, pattern="^[0-9a-f]{16}$")


class BeatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: Text
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    note: str | None = Field(default=None, max_length=10_000)
    resources: dict[str, float] | None = None


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: list[BeatBody] = Field(max_length=10_000)


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["succeeded", "failed", "cancelled"]
    error: ErrorInfo | None = None
    note: str | None = Field(default=None, max_length=10_000)


class StopBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=10_000)


@router.post(
    "/v1/runs/begin", summary="Ask whether a run may go ahead: run, skip, wait, dead_letter or abort"
)
async def post_begin(body: BeginBody, ctx: Ctx, who: Ingester, committer: Decisions) -> dict[str, Any]:
    pipeline = ctx.registry.get(body.pipeline)
    if pipeline is None:
        raise InvalidShape(
            f"unknown pipeline {body.pipeline!r}; configured: {', '.join(ctx.registry.names())}",
            field="pipeline",
        )
    if not pipeline.has_stage(body.stage):
        stages = ", ".join(pipeline.stage_names)
        raise InvalidShape(
            f"stage {body.stage!r} is not in pipeline {pipeline.name!r} (stages: {stages})",
            field="stage",
        )
    request = BeginRequest(**body.model_dump())
    return begin_view(await committer.decide(begin.as_job(ctx.registry, request)))


def begin_view(result: BeginResult) -> dict[str, Any]:
    decision = result.decision
    view: dict[str, Any] = {"decision": decision.action.value, "reason": decision.reason}
    if decision.retry_after is not None:
        view["retry_after"] = round(decision.retry_after, 3)
    if decision.blocker is not None:
        view["blocker"] = decision.blocker
    if result.run_id is not None:
        view.update(
            run_id=result.run_id, attempt=decision.attempt, deadline=iso(result.deadline),
            deadline_in=result.timeout,
            heartbeat_interval=result.heartbeat_interval, heartbeat_timeout=result.heartbeat_timeout,
        )  # fmt: skip
    return view


@router.post("/v1/runs/heartbeat", summary="Heartbeats of guarded runs; each answer is continue or stop")
async def post_heartbeat(
    body: HeartbeatBody, ctx: Ctx, who: Ingester, committer: Decisions
) -> dict[str, Any]:
    reports = [BeatReport(b.run_id, b.progress, b.note, b.resources) for b in body.runs]
    outcome = await committer.decide(heartbeats.as_job(ctx.registry, reports))
    if outcome.events:
        await ctx.committer.submit(outcome.events)
    return {"runs": [{"run_id": a.run_id, "action": a.action, "reason": a.reason} for a in outcome.answers]}


@router.post("/v1/runs/{run_id:path}/complete", summary="A guarded run ended: succeeded, failed or cancelled")
async def post_complete(
    run_id: str, body: CompleteBody, ctx: Ctx, who: Ingester, committer: Decisions
) -> dict[str, Any]:
    error = body.error.model_dump() if body.error is not None else None
    if body.outcome == "failed" and error is None:
        raise InvalidShape("error is required when the outcome is failed", field="error")
    done = await committer.decide(completion.as_job(ctx.registry, run_id, body.outcome, error, body.note))
    view: dict[str, Any] = {"run_id": done.run_id, "outcome": done.outcome, "next": done.next}
    if done.retry_after is not None:
        view["retry_after"] = round(done.retry_after, 3)
    return view


@router.post("/v1/runs/{run_id:path}/stop", summary="Tell a running run to stop at its next heartbeat")
async def post_stop(
    run_id: str, ctx: Ctx, who: Operator, body: Annotated[StopBody, Body()]
) -> dict[str, Any]:
    return await run_in_threadpool(stop_run, ctx.db, run_id, body.reason, Actor(who.name, who.source))
