"""``stagewatch logs``: search the log lines workers shipped, and follow new ones as they arrive.

Lines print oldest first, newest at the bottom, as ``time LEVEL [item stage] message`` with the
exception's stack indented under its line. The level is a word as well as a colour, so the output reads
the same without colour (piped, or ``NO_COLOR`` set).

Exit codes: 0 done (or Ctrl-C while following), 1 the server failed or cannot be reached, 2 bad input.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ParamSpec

import click
from rich.console import Console

from stagewatch.cli.client import ClientError, StagewatchClient
from stagewatch.cli.reads import connect
from stagewatch.cli.render import render_line
from stagewatch.config import parse_duration
from stagewatch.errors import ConfigError

P = ParamSpec("P")
Json = dict[str, Any]

LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_PAGE = 1000
POLL_SECONDS = 1.0
# While following, lines whose own time is up to this much older than the newest one shown still
# appear: workers send in batches, so a line can reach the server a few seconds after a later one.
LOOKBACK_SECONDS = 10.0
_RELATIVE = re.compile(r"(\d+(\.\d+)?[dhms])+")
_SINCE_HELP = "use a duration such as 30m, 2h or 1d, an ISO 8601 time, or epoch seconds"


# --- the command ------------------------------------------------------------------------------------


def _reports_errors(command: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except ClientError as exc:
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(0) from None

    return run


@click.command("logs", short_help="Search workers' log lines by words, video, stage or level; --follow.")
@click.option("-q", "--query", default=None, metavar="TEXT", help="Words that must all be in the line.")
@click.option("--item", "item_id", default=None, metavar="ID", help="Only lines about this video.")
@click.option("--run", "run_id", default=None, metavar="ID", help="Only lines of this run.")
@click.option("--stage", default=None, metavar="STAGE", help="Only lines of this stage, e.g. download.")
@click.option(
    "--level", type=click.Choice(LEVELS, case_sensitive=False), default=None, help="This level and above."
)
@click.option("--since", default=None, metavar="WHEN", help=f"Only newer lines: {_SINCE_HELP}.")
@click.option("--until", default=None, metavar="WHEN", help="Only older lines (same forms as --since).")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE),
    default=100,
    show_default=True,
    metavar="N",
    help=f"How many of the newest matching lines to show (at most {MAX_PAGE}).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (every second) until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="JSON (one object per line with --follow).")
@click.option("--url", default=None, metavar="URL", help="Server URL. [env: STAGEWATCH_URL]")
@click.option("--token", default=None, metavar="TOKEN", help="API token. [env: STAGEWATCH_TOKEN]")
@_reports_errors
def logs(
    query: str | None,
    item_id: str | None,
    run_id: str | None,
    stage: str | None,
    level: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    follow: bool,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Search the log lines workers shipped, newest last; --follow prints new ones as they come.

    \b
    Examples:
      stagewatch logs --item vid-42                 everything one video logged
      stagewatch logs -q "moov atom" --level error  errors mentioning both words
      stagewatch logs --stage publish --since 1h -f the last hour of publish, then follow
      stagewatch logs --item vid-42 --json | jq .   for scripts
    Words are matched whole, except the last, which may be the start of a word (time finds timeout).
    """
    params = {"q": query, "item_id": item_id, "run_id": run_id, "stage": stage, "level": level}
    params.update(since=_when(since, "--since"), until=_when(until, "--until"))
    with connect(url, token) as client:
        page = client.logs({**params, "limit": limit})
        printer = LinePrinter(as_json=as_json, follow=follow)
        printer.first_page(page)
        if follow:
            Follower(client, params, page).run(printer)


def _when(value: str | None, option: str) -> str | None:
    """``--since``/``--until`` as the server takes it: a duration becomes epoch seconds that long ago."""
    if value is None:
        return None
    text = value.strip()
    if _RELATIVE.fullmatch(text):
        try:
            return f"{time.time() - parse_duration(text, source=option, key=''):.3f}"
        except ConfigError:
            pass
    elif _is_time(text):
        return text
    raise ClientError(f"{option} {value!r}: {_SINCE_HELP}", exit_code=2)


def _is_time(text: str) -> bool:
    """Epoch seconds or ISO 8601 (the server checks the range)."""
    try:
        float(text)
        return True
    except ValueError:
        pass
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


# --- talking to the server --------------------------------------------------------------------------


# --- following --------------------------------------------------------------------------------------


class Follower:
    """Polls for lines newer than those shown, printing each once, in time order."""

    def __init__(self, client: StagewatchClient, params: dict[str, Any], first: Json) -> None:
        self._client = client
        self._params = {**params, "until": None}
        shown = first["logs"]
        self._seen = {line["id"]: _epoch(line["time"]) for line in shown}
        self._newest = max(self._seen.values(), default=time.time())
        # When the first page was cut short, older lines than it showed must not trickle in later.
        self._floor = _epoch(shown[-1]["time"]) if shown and first.get("next_cursor") else 0.0

    def run(self, printer: LinePrinter) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            printer.lines(self.poll())

    def poll(self) -> list[Json]:
        """The lines not shown yet, oldest first."""
        since = max(self._newest - LOOKBACK_SECONDS, self._floor)
        fresh = [line for line in self._since(since) if line["id"] not in self._seen]
        fresh.sort(key=lambda line: _epoch(line["time"]))
        for line in fresh:
            self._seen[line["id"]] = _epoch(line["time"])
            self._newest = max(self._newest, self._seen[line["id"]])
        horizon = self._newest - LOOKBACK_SECONDS
        self._seen = {key: at for key, at in self._seen.items() if at >= horizon}
        return fresh

    def _since(self, since: float) -> Iterator[Json]:
        cursor = None
        while True:
            page = self._client.logs(
                {**self._params, "since": f"{since:.3f}", "cursor": cursor, "limit": MAX_PAGE}
            )
            yield from page["logs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _epoch(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


# --- printing ---------------------------------------------------------------------------------------


class LinePrinter:
    """Prints log lines as text (rich, coloured on a terminal) or JSON."""

    def __init__(self, *, as_json: bool, follow: bool) -> None:
        self._as_json = as_json
        self._json_lines = as_json and follow
        self._console = Console(highlight=False, soft_wrap=True)

    def first_page(self, page: Json) -> None:
        if self._as_json and not self._json_lines:
            click.echo(json.dumps(page, indent=2, ensure_ascii=False))
            return
        self.lines(list(reversed(page["logs"])))
        if page.get("next_cursor") and not self._json_lines:
            click.echo("(older matching lines not shown: narrow the search, or raise --limit)", err=True)

    def lines(self, lines: list[Json]) -> None:
        for line in lines:
            if self._json_lines:
                click.echo(json.dumps(line, ensure_ascii=False))
            else:
                self._console.print(render_line(line))
        sys.stdout.flush()
