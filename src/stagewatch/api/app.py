"""Building the FastAPI application: open the database, migrate, start group commit, mount routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from stagewatch import __version__
from stagewatch.api import events, health, items
from stagewatch.api.context import AppContext
from stagewatch.api.errors import install_error_handlers
from stagewatch.config import load_pipelines
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.ingest import GroupCommitter
from stagewatch.settings import Settings
from stagewatch.store.engine import open_database
from stagewatch.store.migrate import upgrade


def create_app(settings: Settings | None = None, registry: PipelineRegistry | None = None) -> FastAPI:
    """The whole server as an ASGI app. Migrations run when it starts."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = open_database(settings.database_url)
        upgrade(db)
        committer = GroupCommitter(
            db, registry or load_pipelines(settings.config), settings.commit_max_events
        )
        committer.start()
        app.state.ctx = AppContext(settings, db, committer._registry, committer)
        try:
            yield
        finally:
            await committer.stop()
            db.dispose()

    app = FastAPI(title="stagewatch", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    for router in (events.router, items.router, health.router):
        app.include_router(router)
    return app
