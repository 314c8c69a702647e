"""``stagewatch audit``: who did what, when, to what, why and from where, newest first, from a running
server (``GET /v1/audit``, scope ``read``).

Exit codes: 0 done, 1 the server failed or cannot be reached (or refused the token), 2 bad input.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

import click
from rich.text import Text

from stagewatch.cli import render
from stagewatch.cli.client import ClientError, Json
from stagewatch.cli.reads import connect, print_json, reports_errors, server_options
from stagewatch.config import parse_duration
from stagewatch.errors import ConfigError

MAX_PAGE = 1000
_DURATION = re.compile(r"(\d+(\.\d+)?[dhms])+")
_WHEN_HELP = "a duration such as 30m, 2h or 1d (that long ago), an ISO 8601 time, or epoch seconds"
AUDIT_COLUMNS = (
    render.Column("time (UTC)"), render.Column("actor"), render.Column("action"), render.Column("target"),
    render.Column("reason", wrap_at=16), render.Column("source", drop=2),
    render.Column("params", wrap_at=16, drop=1, one_line=True),
)  # fmt: skip


@click.command("audit", short_help="The audit trail: who did what, when and why, newest first.")
@click.option("--actor", default=None, metavar="NAME", help="Only actions by this token (or cli:<user>).")
@click.option("--action", default=None, metavar="ACTION", help="Only this action, e.g. item.create.")
@click.option("--target", default=None, metavar="ID", help="Only actions on this item, token or run.")
@click.option("--since", default=None, metavar="WHEN", help=f"Only newer entries: {_WHEN_HELP}.")
@click.option("--until", default=None, metavar="WHEN", help="Only older entries (same forms as --since).")
@click.option(
    "--limit", type=click.IntRange(1, MAX_PAGE), default=50, show_default=True, metavar="N",
    help=f"How many of the newest matching entries to show (at most {MAX_PAGE}).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON instead of a table.")
@server_options
@reports_errors
def audit(
    actor: str | None,
    action: str | None,
    target: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """The audit trail, newest first: token and item creations, cancels, replays and other actions.

    \b
    Examples:
      stagewatch audit --since 1d                  everything in the last day
      stagewatch audit --target vid-42             what was done to one video
      stagewatch audit --actor oncall --json | jq  one token's actions, for scripts
    """
    params = {"actor": actor, "action": action, "target": target, "limit": limit}
    params.update(since=when(since, "--since"), until=when(until, "--until"))
    with connect(url, token) as client:
        page = client.audit(params)
    if as_json:
        print_json(page)
        return
    print_entries(page["audit"], more=bool(page.get("next_cursor")))


def when(value: str | None, option: str) -> str | None:
    """``--since``/``--until`` as the server takes them: a duration becomes epoch seconds that long ago;
    any other text goes as is (the server names what is wrong with it)."""
    if value is None or not _DURATION.fullmatch(value.strip()):
        return value
    try:
        return f"{time.time() - parse_duration(value.strip(), source=option, key=''):.3f}"
    except ConfigError:
        raise ClientError(f"{option} {value!r}: use {_WHEN_HELP}", exit_code=2) from None


def print_entries(entries: Sequence[Json], *, more: bool) -> None:
    if not entries:
        click.echo("no audit entries match")
        return
    render.show(render.FittedTable(AUDIT_COLUMNS, [entry_cells(entry) for entry in entries]))
    if more:
        click.echo("(older matching entries not shown: narrow the search, or raise --limit)", err=True)


def entry_cells(entry: Json) -> tuple[Text, ...]:
    return (
        Text(render.clock(entry.get("at"))),
        Text(str(entry.get("actor"))),
        Text(str(entry.get("action")), style="bold"),
        _text(entry.get("target")),
        _text(entry.get("reason")),
        _text(entry.get("source")),
        _text(_compact(entry.get("params"))),
    )


def _compact(params: Any) -> str | None:
    return json.dumps(params, ensure_ascii=False, separators=(",", ":")) if params else None


def _text(value: str | None) -> Text:
    return Text(render.NONE if value is None or value == "" else value)
