"""Videos (``/videos``): every video, newest-updated first, with filters, a search by id prefix and
cursor pagination, all answered by the indexed ``query.list_items``. Operators can cancel, or replay
the dead letters of, every video that matches the filter (after a count: see ``pages.actions``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.domain.statuses import ItemStatus
from stagewatch.errors import InvalidShape
from stagewatch.service import query
from stagewatch.store.reads import ItemFilter
from stagewatch.web.access import Who
from stagewatch.web.responses import PageRoute, render

router = APIRouter(route_class=PageRoute)

PAGE_SIZE = 50
SINCE_CHOICES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
SINCE_WORDS = {"": "any time", "15m": "last 15 minutes", "1h": "last hour", "6h": "last 6 hours",
               "24h": "last 24 hours", "7d": "last 7 days"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class VideoQuery:
    """The filter of the videos page as the URL (or a bulk action's form) carries it."""

    status: str = ""
    stage: str = ""
    account: str = ""
    scenario: str = ""
    q: str = ""
    since: str = ""
    stuck: bool = False

    @classmethod
    def parse(cls, given: Mapping[str, str]) -> VideoQuery:
        found = cls(
            status=given.get("status", "").strip(), stage=given.get("stage", "").strip(),
            account=given.get("account", "").strip(), scenario=given.get("scenario", "").strip(),
            q=given.get("q", "").strip(), since=given.get("since", "").strip(),
            stuck=given.get("stuck", "") in ("1", "on", "true"),
        )  # fmt: skip
        if found.status and found.status not in {s.value for s in ItemStatus}:
            raise InvalidShape(f"unknown status {found.status!r}", field="status")
        if found.since and found.since not in SINCE_CHOICES:
            raise InvalidShape(f"time range must be one of {', '.join(SINCE_CHOICES)}", field="since")
        return found

    def params(self) -> dict[str, str]:
        """The filter as query parameters (empty ones left out)."""
        values = {k: ("1" if v is True else v) for k, v in asdict(self).items()}
        return {k: v for k, v in values.items() if v not in ("", False)}

    def is_empty(self) -> bool:
        return not self.params()

    def item_filter(self, now: float | None = None) -> ItemFilter:
        since = None
        if self.since:
            since = (time.time() if now is None else now) - SINCE_CHOICES[self.since]
        return ItemFilter(
            status=[self.status] if self.status else None, stage=self.stage or None,
            account=self.account or None, scenario=self.scenario or None, updated_since=since,
            id_prefix=self.q or None, stuck=self.stuck,
        )  # fmt: skip

    def describe(self) -> str:
        """The filter in words, for a confirmation: "status failed, stage download"."""
        words = [f"{name} {value}" for name, value in self.params().items() if name not in ("since", "stuck")]
        if self.since:
            words.append(f"updated in the {SINCE_WORDS[self.since]}")
        if self.stuck:
            words.append("stuck only")
        return ", ".join(words) or "every video"


def video_page(ctx: AppContext, where: VideoQuery, cursor: str | None) -> dict[str, Any]:
    """One page of videos, newest-updated first."""
    return query.list_items(ctx.db, where.item_filter(), cursor, PAGE_SIZE)


def stage_names(ctx: AppContext) -> list[str]:
    names: list[str] = []
    for name in ctx.registry.names():
        names.extend(s for s in ctx.registry.require(name).stage_names if s not in names)
    return names


@router.get("/videos", response_class=HTMLResponse)
async def videos_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    where = VideoQuery.parse(request.query_params)
    cursor = request.query_params.get("cursor") or None
    page = await run_in_threadpool(video_page, ctx, where, cursor)
    return render(
        request, who, "videos.html", where=where, params=where.params(), cursor=cursor, page=page,
        statuses=[s.value for s in ItemStatus], stages=stage_names(ctx), since_words=SINCE_WORDS,
    )  # fmt: skip
