"""The operator's buttons. Each form posts here with its CSRF token and a reason; the ``operate`` scope
is required (a ``read`` login gets a 403 page); the work is done by ``service.control.operate``, which
writes the audit record in the same transaction. A bulk action shows its count first and acts only
when that is confirmed."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.errors import InvalidShape
from stagewatch.service.control import operate
from stagewatch.store import control, reads
from stagewatch.web.access import OperatorForm, PostedForm
from stagewatch.web.pages.videos import VideoQuery
from stagewatch.web.responses import PageRoute, local_path, redirect, render

router = APIRouter(route_class=PageRoute)

# The most videos one bulk action from the dashboard may touch; more needs a narrower filter.
MAX_BULK = 10_000


def _letter_id(form: PostedForm) -> int:
    try:
        return int(form.required("dead_letter_id"))
    except ValueError:
        raise InvalidShape("dead_letter_id must be a number", field="dead_letter_id") from None


def _back(form: PostedForm, default: str) -> str:
    return local_path(form.get("back"), default)


# --- one video, one run, one dead letter ---------------------------------------------------------------


@router.post("/actions/cancel")
async def cancel(request: Request, form: OperatorForm, ctx: Ctx) -> Response:
    item_id, reason = form.required("item_id"), form.reason()
    await run_in_threadpool(operate.cancel_items, ctx.db, ctx.registry, [item_id], reason, form.viewer.actor)
    return redirect(request, _back(form, "/videos"), f"Cancelled {item_id}: {reason}")


@router.post("/actions/resume")
async def resume(request: Request, form: OperatorForm, ctx: Ctx) -> Response:
    item_id, stage, reason = form.required("item_id"), form.required("from_stage"), form.reason()
    result = await run_in_threadpool(
        lambda: operate.resume_item(ctx.db, ctx.registry, item_id, stage, reason, form.viewer.actor)
    )
    return redirect(request, _back(form, "/videos"), f"Resumed {item_id} from {stage}{_delivery(result)}")


def _delivery(result: dict[str, Any]) -> str:
    delivered = result.get("delivery")
    if delivered is None:
        return " (no payload to re-deliver: the next delivery runs it)"
    return "; re-delivered" if delivered["ok"] else f"; re-delivery failed: {delivered['detail']}"


@router.post("/actions/replay")
async def replay(request: Request, form: OperatorForm, ctx: Ctx) -> Response:
    letter, reason = _letter_id(form), form.reason()
    done = await run_in_threadpool(
        lambda: operate.replay_dead_letters(ctx.db, ctx.registry, [letter], reason, form.viewer.actor)
    )
    notice = f"Replayed dead letter #{letter}{_delivery(done[0])}" if done else f"#{letter} was not open"
    return redirect(request, _back(form, "/dead-letters"), notice)


@router.post("/actions/discard")
async def discard(request: Request, form: OperatorForm, ctx: Ctx) -> Response:
    letter, reason = _letter_id(form), form.reason()
    done = await run_in_threadpool(
        operate.discard_dead_letters, ctx.db, ctx.registry, [letter], reason, form.viewer.actor
    )
    notice = f"Discarded dead letter #{letter}" if done else f"#{letter} was not open"
    return redirect(request, _back(form, "/dead-letters"), notice)


@router.post("/actions/stop")
async def stop(request: Request, form: OperatorForm, ctx: Ctx) -> Response:
    run_id, reason = form.required("run_id"), form.reason()
    await run_in_threadpool(operate.stop_run, ctx.db, run_id, reason, form.viewer.actor)
    return redirect(request, _back(form, "/inflight"), f"Told {run_id} to stop at its next heartbeat")


# --- bulk: every video a filter matches ----------------------------------------------------------------


def _matching(ctx: AppContext, where: VideoQuery) -> list[str]:
    if where.is_empty():
        raise InvalidShape("choose a filter first: a bulk action never works on every video", field="filter")
    with ctx.db.reader.connect() as conn:
        ids = reads.item_ids(conn, where.item_filter(), MAX_BULK + 1)
    if len(ids) > MAX_BULK:
        raise InvalidShape(f"the filter matches over {MAX_BULK:,} videos: narrow it", field="filter")
    return ids


def _open_letters(ctx: AppContext, item_ids: list[str]) -> list[int]:
    with ctx.db.reader.connect() as conn:
        return [i for item in item_ids for i in control.dead_letter_ids(conn, item_id=item)]


@router.post("/actions/bulk", response_model=None)
async def bulk(request: Request, form: OperatorForm, ctx: Ctx) -> Response:
    what = form.get("what")
    if what not in ("cancel", "replay"):
        raise InvalidShape("what must be cancel or replay", field="what")
    where = VideoQuery.parse(form.fields)
    ids = await run_in_threadpool(_matching, ctx, where)
    letters = await run_in_threadpool(_open_letters, ctx, ids) if what == "replay" else []
    if form.get("confirm") != "yes":
        return _confirm(request, form, what, where, len(ids), len(letters))
    back = "/videos?" + urlencode(where.params())
    return await _bulk_act(request, form, ctx, what, where, ids, letters, back)


def _confirm(
    request: Request, form: PostedForm, what: str, where: VideoQuery, videos: int, letters: int
) -> HTMLResponse:
    return render(
        request, form.viewer, "bulk_confirm.html", what=what, where=where, params=where.params(),
        videos=videos, letters=letters,
    )  # fmt: skip


async def _bulk_act(
    request: Request, form: PostedForm, ctx: Ctx, what: str, where: VideoQuery, ids: list[str],
    letters: list[int], back: str,
) -> Response:  # fmt: skip
    reason, who, bulk_filter = form.reason(), form.viewer.actor, where.params()
    if what == "cancel":
        done = await run_in_threadpool(
            lambda: operate.cancel_items(ctx.db, ctx.registry, ids, reason, who, bulk_filter=bulk_filter)
        )
        return redirect(request, back, f"Cancelled {len(done):,} videos ({where.describe()}): {reason}")
    replayed = await run_in_threadpool(
        lambda: operate.replay_dead_letters(
            ctx.db, ctx.registry, letters, reason, who, bulk_filter=bulk_filter
        )
    )
    return redirect(request, back, f"Replayed {len(replayed):,} dead letters ({where.describe()}): {reason}")
