"""``stagewatch token create|list|revoke``: API tokens, managed in the database directly.

These commands do not go through a server, so the first token can be made before any exists (and before
the server has ever started: the database is migrated first). Creating and revoking are audited with the
actor ``cli:<os user>`` and the host name as the source.

Exit codes: 0 done, 1 the database failed or the token does not exist, 2 bad input (a name taken, an
unknown scope, a bad database URL).
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import ParamSpec

import click
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from stagewatch.cli import render
from stagewatch.cli.reads import print_json
from stagewatch.errors import NotFound, StagewatchError
from stagewatch.service import auth
from stagewatch.settings import load_settings
from stagewatch.store.audit import Actor
from stagewatch.store.engine import Database, open_database
from stagewatch.store.migrate import upgrade
from stagewatch.store.tokens import TokenRow

P = ParamSpec("P")

SCOPE_HELP = (
    "Repeat for several. ingest: send events and logs; read: the queries and the audit trail; "
    "operate: cancel, replay, resume (includes read); admin: everything, tokens too."
)
TOKEN_COLUMNS = (
    render.Column("name"), render.Column("scopes"), render.Column("prefix", drop=2),
    render.Column("created", "right"), render.Column("by", wrap_at=8, drop=3),
    render.Column("last used", "right", drop=1), render.Column("status"),
)  # fmt: skip

database_option = click.option(
    "--db",
    "--database-url",
    "database_url",
    default=None,
    metavar="URL",
    help="Database URL or SQLite file path. [env: STAGEWATCH_DATABASE_URL]",
)


def reports_errors(command: Callable[P, None]) -> Callable[P, None]:
    """A stagewatch or database error becomes one ``error:`` line: exit 1 when the token does not exist
    or the database failed, 2 for bad input."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except StagewatchError as exc:
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(1 if isinstance(exc, NotFound) else 2) from None
        except SQLAlchemyError as exc:
            click.echo(f"error: the database failed: {type(exc).__name__}: {exc}".splitlines()[0], err=True)
            raise click.exceptions.Exit(1) from None

    return run


@contextmanager
def migrated_database(database_url: str | None) -> Iterator[Database]:
    """The database named by ``--db`` or ``STAGEWATCH_DATABASE_URL``, migrated, closed afterwards."""
    db = open_database(load_settings(database_url=database_url).database_url)
    try:
        upgrade(db)
        yield db
    finally:
        db.dispose()


def cli_actor() -> Actor:
    """Who runs this command, for the audit trail."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name (some containers): the uid still says who
        user = f"uid{os.getuid()}"
    return Actor(f"cli:{user}", socket.gethostname())


@click.group("token", short_help="Create, list and revoke API tokens (in the database, no server needed).")
def token() -> None:
    """API tokens, which every request to the server needs (unless it runs with --no-auth on loopback).

    \b
    Examples:
      stagewatch token create workers --scope ingest         for the SDK in your workers
      stagewatch token create oncall --scope operate         read, plus cancel and replay
      stagewatch token list
      stagewatch token revoke workers --reason "leaked in a log"
    Use a token with --token or STAGEWATCH_TOKEN (CLI and SDK), or 'Authorization: Bearer <token>'.
    """


@token.command("create")
@click.argument("name")
@click.option(
    "--scope", "scopes", multiple=True, required=True, type=click.Choice(auth.SCOPES), help=SCOPE_HELP
)
@database_option
@reports_errors
def create(name: str, scopes: tuple[str, ...], database_url: str | None) -> None:
    """Create the token NAME and print it. It is shown this once: only its hash is stored."""
    with migrated_database(database_url) as db:
        created = auth.create_token(db, name, scopes, cli_actor())
    click.echo(created.token)
    noun = "scope" if len(created.info.scopes) == 1 else "scopes"
    click.echo(f"created token {name!r} with {noun} {', '.join(created.info.scopes)}.", err=True)
    click.echo("Copy it now: it cannot be shown again. Use it as STAGEWATCH_TOKEN or --token.", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@database_option
@reports_errors
def list_command(as_json: bool, database_url: str | None) -> None:
    """Every token: its scopes, who made it and when, when it was last used, and whether it is revoked."""
    with migrated_database(database_url) as db:
        found = auth.list_tokens(db)
    if as_json:
        print_json({"tokens": [auth.token_view(info) for info in found]})
    elif not found:
        click.echo("no tokens yet; create one with: stagewatch token create NAME --scope ...")
    else:
        now = datetime.now(UTC)
        render.show(render.FittedTable(TOKEN_COLUMNS, [token_cells(info, now) for info in found]))


@token.command("revoke")
@click.argument("name")
@click.option("--reason", default=None, help="Why; it goes into the audit trail.")
@database_option
@reports_errors
def revoke(name: str, reason: str | None, database_url: str | None) -> None:
    """Revoke the token NAME. Servers refuse it within STAGEWATCH_AUTH_CACHE_SECONDS (default 5 s)."""
    now = time.time()
    with migrated_database(database_url) as db:
        info = auth.revoke_token(db, name, cli_actor(), reason=reason, now=now)
    if info.revoked_at == now:
        click.echo(f"revoked token {name!r}; servers refuse it within a few seconds")
    else:
        click.echo(
            f"token {name!r} was already revoked at {render.clock(auth.token_view(info)['revoked_at'])}"
        )


def token_cells(info: TokenRow, now: datetime) -> tuple[Text, ...]:
    view = auth.token_view(info)
    status = Text("active", style="green") if info.revoked_at is None else Text("revoked", style="dim")
    return (
        Text(info.name, style="bold"),
        Text(", ".join(info.scopes)),
        Text(info.prefix + "…"),
        Text(render.ago(render.parse_time(view["created_at"]), now)),
        Text(info.created_by or render.NONE),
        Text(render.ago(render.parse_time(view["last_used_at"]), now) if info.last_used_at else "never"),
        status,
    )
