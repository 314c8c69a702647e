"""Operator actions over HTTP (scope ``operate``; reads of the dead-letter queue need ``read``): cancel
one item or a filtered set, resume an item from a stage, and list, replay or discard dead letters. Bulk
actions take a filter and answer with the count first when ``dry_run`` is set."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import Operator, Principal, Reader
from stagewatch.api.context import Ctx
from stagewatch.domain.events import iso
from stagewatch.domain.statuses import ItemStatus
from stagewatch.errors import InvalidShape
from stagewatch.service.control import operate
from stagewatch.service.time_bounds import time_bound
from stagewatch.store import control, reads
from stagewatch.store.audit import Actor
from stagewatch.store.reads import ItemFilter

router = APIRouter(tags=["control"])

# The most items one bulk action may touch; a larger set needs a narrower filter (or several calls).
MAX_BULK = 100_000

Reason = Annotated[str | None, Field(default=None, max_length=10_000)]


def _actor(who: Principal) -> Actor:
    return Actor(who.name, who.source)


class ItemFilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: list[ItemStatus] | None = None
    stage: str | None = None
    account: str | None = None
    scenario: str | None = None
    pipeline: str | None = None
    prefix: str | None = None
    updated_since: float | str | None = None
    stuck: bool | None = None

    def to_filter(self) -> ItemFilter:
        if not self.model_dump(exclude_none=True):
            raise InvalidShape("give at least one filter field (status, stage, account, ...)", field="filter")
        since_value = time_bound(self.updated_since, "filter.updated_since")
        return ItemFilter(
            status=[s.value for s in self.status] if self.status else None, stage=self.stage,
            account=self.account, scenario=self.scenario, pipeline=self.pipeline, id_prefix=self.prefix,
            updated_since=since_value, stuck=bool(self.stuck),
        )  # fmt: skip


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=10_000)


class BulkCancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: ItemFilterBody
    reason: str | None = Field(default=None, max_length=10_000)
    dry_run: bool = False


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_stage: str = Field(min_length=1, max_length=256)
    reason: Reason
    deliver: bool = True


class DlqFilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str | None = None
    item_id: str | None = None
    since: float | str | None = None


class DlqActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[int] | None = Field(default=None, max_length=MAX_BULK)
    filter: DlqFilterBody | None = None
    reason: Reason
    dry_run: bool = False


# --- cancel and resume ---------------------------------------------------------------------------------


@router.post("/v1/items/cancel", summary="Cancel every item matching a filter (dry_run: count only)")
async def bulk_cancel(body: BulkCancelBody, ctx: Ctx, who: Operator) -> dict[str, Any]:
    where = body.filter.to_filter()
    ids = await run_in_threadpool(_matching_items, ctx, where)
    if body.dry_run:
        return {"dry_run": True, "count": len(ids)}
    filter_params = body.filter.model_dump(exclude_none=True, mode="json")
    done = await run_in_threadpool(
        lambda: operate.cancel_items(
            ctx.db, ctx.registry, ids, body.reason, _actor(who), bulk_filter=filter_params
        )
    )
    return {"dry_run": False, "count": len(done)}


def _matching_items(ctx: Any, where: ItemFilter) -> list[str]:
    with ctx.db.reader.connect() as conn:
        ids = reads.item_ids(conn, where, MAX_BULK + 1)
    if len(ids) > MAX_BULK:
        raise InvalidShape(f"the filter matches over {MAX_BULK} items: narrow it", field="filter")
    return ids


@router.post(
    "/v1/items/{item_id:path}/cancel",
    summary="Cancel one item: refused at begin, stopped at its next heartbeat",
)
async def cancel_item(item_id: str, body: CancelBody, ctx: Ctx, who: Operator) -> dict[str, Any]:
    done = await run_in_threadpool(
        operate.cancel_items, ctx.db, ctx.registry, [item_id], body.reason, _actor(who)
    )
    return {"item_id": item_id, "cancelled": bool(done)}


@router.post(
    "/v1/items/{item_id:path}/resume", summary="Lift a cancel, re-arm a stage and those after it, re-deliver"
)
async def resume_item(item_id: str, body: ResumeBody, ctx: Ctx, who: Operator) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: operate.resume_item(
            ctx.db,
            ctx.registry,
            item_id,
            body.from_stage,
            body.reason,
            _actor(who),
            deliver_payload=body.deliver,
        )
    )


# --- the dead-letter queue -----------------------------------------------------------------------------


@router.get("/v1/dlq", summary="Dead letters, newest first, with filters")
async def list_dead_letters(
    ctx: Ctx,
    who: Reader,
    status: Annotated[str | None, Query(description="open (default), replayed, discarded or all")] = "open",
    stage: str | None = None,
    item_id: str | None = None,
    since: Annotated[str | None, Query(description="epoch seconds or ISO 8601")] = None,
    before_id: Annotated[int | None, Query(description="continue after this id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    if status not in ("open", "replayed", "discarded", "all", None):
        raise InvalidShape("status must be open, replayed, discarded or all", field="status")
    where: dict[str, Any] = {"status": None if status == "all" else status, "stage": stage,
                             "item_id": item_id, "since": time_bound(since, "since")}  # fmt: skip

    def page() -> list[dict[str, Any]]:
        with ctx.db.reader.connect() as conn:
            return control.dead_letter_page(conn, before_id=before_id, limit=limit, **where)

    rows = await run_in_threadpool(page)
    next_id = rows[-1]["id"] if len(rows) == limit else None
    return {"dead_letters": [dead_letter_view(row) for row in rows], "next_before_id": next_id}


def dead_letter_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": iso(row["created_at"]), "resolved_at": iso(row["resolved_at"])}


def _letter_ids(ctx: Any, body: DlqActionBody) -> list[int]:
    if (body.ids is None) == (body.filter is None):
        raise InvalidShape("give either ids or a filter", field="ids")
    if body.ids is not None:
        return body.ids
    assert body.filter is not None
    where = {"stage": body.filter.stage, "item_id": body.filter.item_id,
             "since": time_bound(body.filter.since, "filter.since")}  # fmt: skip
    with ctx.db.reader.connect() as conn:
        return control.dead_letter_ids(conn, **where)


@router.post(
    "/v1/dlq/replay", summary="Re-arm and re-deliver dead letters (by ids or filter; dry_run counts)"
)
async def replay(body: DlqActionBody, ctx: Ctx, who: Operator) -> dict[str, Any]:
    ids = await run_in_threadpool(_letter_ids, ctx, body)
    if body.dry_run:
        return {"dry_run": True, "count": len(ids)}
    bulk = body.filter.model_dump(exclude_none=True, mode="json") if body.filter else None
    results = await run_in_threadpool(
        lambda: operate.replay_dead_letters(
            ctx.db, ctx.registry, ids, body.reason, _actor(who), bulk_filter=bulk
        )
    )
    return {"dry_run": False, "count": len(results), "replayed": results}


@router.post("/v1/dlq/discard", summary="Give up on dead letters for good (by ids or filter; dry_run counts)")
async def discard(body: DlqActionBody, ctx: Ctx, who: Operator) -> dict[str, Any]:
    ids = await run_in_threadpool(_letter_ids, ctx, body)
    if body.dry_run:
        return {"dry_run": True, "count": len(ids)}
    bulk = body.filter.model_dump(exclude_none=True, mode="json") if body.filter else None
    done = await run_in_threadpool(
        lambda: operate.discard_dead_letters(
            ctx.db, ctx.registry, ids, body.reason, _actor(who), bulk_filter=bulk
        )
    )
    return {"dry_run": False, "count": len(done), "discarded": done}
