"""Dead letters (``/dead-letters``): work whose attempts ran out, with its payload, newest first; replay
or discard one, or every letter a filter matches (after a count)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.errors import InvalidShape
from stagewatch.service.control import operate
from stagewatch.store import control
from stagewatch.web.access import OperatorForm, PostedForm, Who
from stagewatch.web.responses import PageRoute, redirect, render

router = APIRouter(route_class=PageRoute)

PAGE_SIZE = 50
STATUSES = ("open", "replayed", "discarded", "all")


@dataclass(frozen=True, slots=True)
class LetterQuery:
    status: str = "open"
    stage: str = ""
    item_id: str = ""

    @classmethod
    def parse(cls, given: Mapping[str, str]) -> LetterQuery:
        found = cls(
            given.get("status") or "open", given.get("stage", "").strip(), given.get("item_id", "").strip()
        )
        if found.status not in STATUSES:
            raise InvalidShape(f"status must be one of {', '.join(STATUSES)}", field="status")
        return found

    def where(self) -> dict[str, Any]:
        return {"status": None if self.status == "all" else self.status, "stage": self.stage or None,
                "item_id": self.item_id or None}  # fmt: skip

    def params(self) -> dict[str, str]:
        return {
            k: v for k, v in (("status", self.status), ("stage", self.stage), ("item_id", self.item_id)) if v
        }


def _page(ctx: AppContext, where: LetterQuery, before: int | None) -> dict[str, Any]:
    with ctx.db.reader.connect() as conn:
        rows = control.dead_letter_page(conn, before_id=before, limit=PAGE_SIZE + 1, **where.where())
    more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
    return {"letters": rows, "next_before": rows[-1]["id"] if more else None}


def _before(request: Request) -> int | None:
    raw = request.query_params.get("before")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidShape("before must be a dead-letter id", field="before") from None


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    where, before = LetterQuery.parse(request.query_params), _before(request)
    page = await run_in_threadpool(_page, ctx, where, before)
    stages = sorted({s for p in ctx.registry.pipelines.values() for s in p.stage_names})
    return render(
        request, who, "dead_letters.html", where=where, params=where.params(), before=before, page=page,
        statuses=STATUSES, stages=stages,
    )  # fmt: skip


def _open_ids(ctx: AppContext, where: LetterQuery) -> list[int]:
    with ctx.db.reader.connect() as conn:
        return control.dead_letter_ids(conn, stage=where.stage or None, item_id=where.item_id or None)


@router.post("/actions/dead-letters", response_model=None)
async def bulk_letters(request: Request, form: OperatorForm, ctx: Ctx) -> Response:
    what = form.get("what")
    if what not in ("replay", "discard"):
        raise InvalidShape("what must be replay or discard", field="what")
    where = LetterQuery.parse({**form.fields, "status": "open"})
    ids = await run_in_threadpool(_open_ids, ctx, where)
    if form.get("confirm") != "yes":
        return render(request, form.viewer, "dead_letters_confirm.html", what=what, where=where,
                      params=where.params(), count=len(ids))  # fmt: skip
    done = await run_in_threadpool(_act, ctx, what, ids, form, where)
    verb = "Replayed" if what == "replay" else "Discarded"
    return redirect(request, "/dead-letters?" + urlencode(where.params()), f"{verb} {done:,} dead letters")


def _act(ctx: AppContext, what: str, ids: list[int], form: PostedForm, where: LetterQuery) -> int:
    reason, who, bulk_filter = form.reason(), form.viewer.actor, where.params()
    if what == "replay":
        return len(
            operate.replay_dead_letters(ctx.db, ctx.registry, ids, reason, who, bulk_filter=bulk_filter)
        )
    return len(operate.discard_dead_letters(ctx.db, ctx.registry, ids, reason, who, bulk_filter=bulk_filter))
