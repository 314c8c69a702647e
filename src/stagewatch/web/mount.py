"""Adding the dashboard to the FastAPI app: its routes, its static files and its session key."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from stagewatch.settings import Settings
from stagewatch.web.access import WebState
from stagewatch.web.pages import (
    actions,
    audit,
    dead_letters,
    errors,
    inflight,
    login,
    logs,
    overview,
    video,
    videos,
)
from stagewatch.web.session import session_key
from stagewatch.web.templating import make_environment

PAGES = (login, overview, videos, video, inflight, errors, dead_letters, logs, audit, actions)


def mount_dashboard(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard at ``/`` (pages), ``/live/...`` (event streams) and ``/static/...``."""
    secret = settings.session_secret.get_secret_value() if settings.session_secret else None
    app.state.web = WebState(key=session_key(secret), templates=make_environment())
    for page in PAGES:
        app.include_router(page.router, include_in_schema=False)
    app.mount("/static", StaticFiles(packages=[("stagewatch.web", "static")]), name="static")
