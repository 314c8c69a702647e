"""Building the FastAPI application: open the database, migrate, start group commit, mount routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from stagewatch import __version__
from stagewatch.api import audit, control, dependencies, events, health, items, logs, runs, stages, tokens
from stagewatch.api.auth import install_auth
from stagewatch.api.context import AppContext
from stagewatch.api.errors import install_error_handlers
from stagewatch.config import load_pipelines
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.control.watchdog import watchdog_task
from stagewatch.service.health_probes import DependencyProber
from stagewatch.service.ingest import GroupCommitter
from stagewatch.service.leader import Leadership
from stagewatch.service.logs import log_committer
from stagewatch.service.retention import RetentionTask
from stagewatch.service.runtime import tune_garbage_collector
from stagewatch.settings import Settings
from stagewatch.store.engine import open_database
from stagewatch.store.migrate import upgrade
from stagewatch.web import mount_dashboard


def create_app(settings: Settings | None = None, registry: PipelineRegistry | None = None) -> FastAPI:
    """The whole server as an ASGI app. Migrations run when it starts."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = open_database(settings.database_url)
        upgrade(db)
        pipelines = registry or load_pipelines(settings.config)
        ctx = AppContext(
            settings=settings,
            db=db,
            registry=pipelines,
            committer=GroupCommitter(
                db, pipelines, settings.commit_max_events, max_backlog=settings.max_ingest_backlog
            ),
            log_committer=log_committer(db, settings.commit_max_events, settings.max_ingest_backlog),
            leadership=Leadership(db, "background"),
        )
        ctx.committer.start()
        ctx.log_committer.start()
        app.state.ctx = ctx
        install_auth(app, ctx)
        retention = RetentionTask(db, settings, ctx.leadership)
        retention.start()
        prober = DependencyProber(db, pipelines.dependencies, ctx.leadership)
        prober.start()
        watchdog = watchdog_task(db, pipelines, settings.watchdog_interval, ctx.leadership)
        watchdog.start()
        tune_garbage_collector()
        try:
            yield
        finally:
            await watchdog.stop()
            await prober.stop()
            await retention.stop()
            await ctx.log_committer.stop()
            await ctx.committer.stop()
            if ctx.leadership is not None:
                ctx.leadership.close()
            db.dispose()

    app = FastAPI(title="stagewatch", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    for router in (events.router, items.router, logs.router, health.router, audit.router, tokens.router,
                   runs.router, control.router, dependencies.router, stages.router):  # fmt: skip
        app.include_router(router)
    mount_dashboard(app, settings)
    return app
