"""What every request handler needs, built once when the app starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.ingest import BatchCommitter, GroupCommitter
from stagewatch.service.leader import Leadership
from stagewatch.service.logs import LogRecord
from stagewatch.settings import Settings
from stagewatch.store.engine import Database


@dataclass
class AppContext:
    settings: Settings
    db: Database
    registry: PipelineRegistry
    committer: GroupCommitter
    log_committer: BatchCommitter[LogRecord]
    # Background loops (dependency prober, retention) run while this replica leads; see service.leader.
    leadership: Leadership | None = None

    def committers(self) -> dict[str, BatchCommitter[Any]]:
        """Every ingest queue of this server, by what it carries (``/readyz`` names them so)."""
        return {"events": self.committer, "logs": self.log_committer}


async def context(request: Request) -> AppContext:
    # Async on purpose: a plain function dependency costs every request a hop to the thread pool.
    ctx: AppContext = request.app.state.ctx
    return ctx


# Handlers declare ``ctx: Ctx`` to receive the app's context.
Ctx = Annotated[AppContext, Depends(context)]
