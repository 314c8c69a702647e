"""Entry point of the ``stagewatch`` command. Each command is thin: parse, call, render.

Exit codes: 0 success, 1 the operation failed (server error, not found), 2 bad usage or input.
"""

from __future__ import annotations

import ipaddress
import logging
import sys

import click

from stagewatch import __version__
from stagewatch.cli.lazy import LazyGroup
from stagewatch.errors import StagewatchError, StoreUnavailable
from stagewatch.settings import Settings, load_settings

log = logging.getLogger("stagewatch.cli")

# Every command but serve and migrate, by name: its module is imported only when it runs.
COMMANDS = {
    **{name: f"stagewatch.cli.reads:{name}" for name in ("status", "items", "summary")},
    "send-events": "stagewatch.cli.reads:send_events",
    **{name: f"stagewatch.cli.control:{name}" for name in ("cancel", "resume", "stop", "dlq")},
    **{name: f"stagewatch.cli.control:{name}" for name in ("pause", "unpause", "limit")},
    "demo": "stagewatch.cli.demo:demo",
    "logs": "stagewatch.cli.logs:logs",
    "deps": "stagewatch.cli.deps:deps",
    "token": "stagewatch.cli.tokens:token",
    "audit": "stagewatch.cli.audit:audit",
}


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="stagewatch")
def cli() -> None:
    """stagewatch: where every video is, why it failed, and what to do about it.

    \b
    Start here:
      stagewatch demo                  a simulated pipeline, live, with the dashboard at its URL
      stagewatch token create me --scope admin
                                       a token (the server needs one; or `serve --no-auth` on loopback)
      stagewatch serve                 run the server and dashboard (SQLite ./stagewatch.db by default)
      stagewatch status VIDEO_ID       the whole story of one video
      stagewatch items --status failed list videos by status, stage, account
      stagewatch cancel VIDEO_ID --reason ...; stagewatch dlq replay --item VIDEO_ID
    The server URL comes from --url or STAGEWATCH_URL (default http://127.0.0.1:8000), the token from
    --token or STAGEWATCH_TOKEN.
    """


@cli.command()
@click.option("--host", default=None, help="Address to bind. [default: 127.0.0.1, or STAGEWATCH_HOST]")
@click.option("--port", type=int, default=None, help="Port to bind. [default: 8000, or STAGEWATCH_PORT]")
@click.option(
    "--db",
    "database_url",
    default=None,
    help="Database URL or SQLite file path. [env: STAGEWATCH_DATABASE_URL]",
)
@click.option("--config", "config_path", default=None, help="Pipelines file. [default: ./stagewatch.toml]")
@click.option("--log-level", default=None, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--auth/--no-auth",
    "auth",
    default=None,
    help="Require an API token on every request but the health checks; --no-auth only on loopback. "
    "[default: on, or STAGEWATCH_AUTH]",
)
def serve(
    host: str | None,
    port: int | None,
    database_url: str | None,
    config_path: str | None,
    log_level: str | None,
    auth: bool | None,
) -> None:
    """Run the server: the ingest and control API, queries, and the dashboard at /. Migrates the database
    first."""
    import uvicorn

    from stagewatch.api.app import create_app
    from stagewatch.config import load_pipelines

    settings = load_settings(host=host, port=port, database_url=database_url, config=config_path, auth=auth)
    _refuse_open_server_without_auth(settings)
    registry = load_pipelines(settings.config)
    level = log_level or settings.log_level
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    click.echo(
        f"stagewatch {__version__} serving http://{settings.host}:{settings.port} "
        f"(database {_safe_url(settings.database_url)}; pipelines {', '.join(registry.names())})"
    )
    _tell_about_auth(settings)
    uvicorn.run(
        create_app(settings, registry),
        host=settings.host,
        port=settings.port,
        log_level=level,
        access_log=False,
    )


@cli.command()
@click.option(
    "--db",
    "database_url",
    default=None,
    help="Database URL or SQLite file path. [env: STAGEWATCH_DATABASE_URL]",
)
def migrate(database_url: str | None) -> None:
    """Create or upgrade the database schema. Safe to run again."""
    from stagewatch.store.engine import open_database
    from stagewatch.store.migrate import upgrade

    settings = load_settings(database_url=database_url)
    db = open_database(settings.database_url)
    try:
        upgrade(db)
    finally:
        db.dispose()
    click.echo(f"database {_safe_url(settings.database_url)} is up to date")


def _refuse_open_server_without_auth(settings: Settings) -> None:
    """Exit 2 when auth is off and the server would be reachable from other machines."""
    if settings.auth or _is_loopback(settings.host):
        return
    click.echo(
        f"error: refusing to serve on {settings.host} with auth off: anyone who can reach it could send, "
        "read and change everything. Either create a token (stagewatch token create NAME --scope ...) "
        "and serve with auth on, or bind 127.0.0.1 (--host 127.0.0.1).",
        err=True,
    )
    sys.exit(2)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # any other host name may resolve to anything
        return False


def _tell_about_auth(settings: Settings) -> None:
    """Warn when auth is off; with auth on and no token yet, say how to make one."""
    if not settings.auth:
        log.warning(
            "serve.auth_off host=%s: every request is 'anonymous' with every scope; "
            "only this machine can reach it",
            settings.host,
        )
        return
    if _active_tokens(settings) == 0:
        click.echo(
            "No API token exists yet, so every request but /healthz and /readyz gets 401. Create one "
            "(with the same --db or STAGEWATCH_DATABASE_URL):\n"
            "  stagewatch token create NAME --scope ingest --scope read"
        )


def _active_tokens(settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from stagewatch.cli import tokens as token_commands
    from stagewatch.service.auth import active_token_count

    try:
        with token_commands.migrated_database(settings.database_url) as db:
            return active_token_count(db)
    except SQLAlchemyError as exc:
        url = _safe_url(settings.database_url)
        raise StoreUnavailable(f"cannot use the database {url}: {type(exc).__name__}: {exc}") from None


def _safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    from stagewatch.store.engine import normalise_url

    return make_url(normalise_url(url)).render_as_string(hide_password=True)


def main() -> None:
    """Run the CLI, turning stagewatch errors into a message and an exit code instead of a traceback."""
    try:
        cli.main(prog_name="stagewatch", standalone_mode=True)
    except StagewatchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
