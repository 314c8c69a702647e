"""Commands that read from (or send to) a running server: status, items, summary, send-events.

Each is thin: parse the options, call ``StagewatchClient``, print with ``render``. A failed request prints
one ``error: ...`` line on stderr and exits 1 (2 when the server calls the input bad); no traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, ParamSpec

import click
import orjson
from pydantic import ValidationError
from rich.console import RenderableType
from rich.text import Text

from stagewatch.cli import render
from stagewatch.cli.client import ClientError, Json, StagewatchClient
from stagewatch.domain.statuses import ItemStatus
from stagewatch.settings import load_settings

P = ParamSpec("P")
MAX_BATCH = 1000
MAX_PAGE = 500
# How many malformed lines to name before summarising the rest.
MAX_LINE_PROBLEMS = 20
UTF8_BOM = b"\xef\xbb\xbf"

URL_HELP = "Server URL. [env: STAGEWATCH_URL; default: http://127.0.0.1:8000]"
TOKEN_HELP = "API token, sent as 'Authorization: Bearer'. [env: STAGEWATCH_TOKEN]"
JSON_HELP = "Print the server's JSON instead of tables (for scripts and jq)."


# --- shared plumbing -------------------------------------------------------------------------------


def server_options(command: Callable[P, None]) -> Callable[P, None]:
    """The ``--url`` and ``--token`` options every command here takes."""
    command = click.option("--token", default=None, metavar="TOKEN", help=TOKEN_HELP)(command)
    return click.option("--url", default=None, metavar="URL", help=URL_HELP)(command)


def reports_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Turn a ``ClientError`` into one ``error:`` line on stderr and the error's exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except ClientError as exc:
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None

    return run


def connect(url: str | None, token: str | None) -> StagewatchClient:
    """A client for the server named by ``--url``/``STAGEWATCH_URL``, sending the token if there is one."""
    try:
        settings = load_settings(url=url, token=token)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise ClientError(f"invalid setting {problem['loc'][0]}: {problem['msg']}", exit_code=2) from None
    if not settings.url.startswith(("http://", "https://")):
        raise ClientError(
            f"the server URL must start with http:// or https://, not {settings.url!r}", exit_code=2
        )
    return StagewatchClient(settings.url, settings.token)


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


# --- status ----------------------------------------------------------------------------------------


@click.command("status", short_help="The whole story of one video: stage, attempts, errors, history.")
@click.argument("item_id")
@click.option("--stack", is_flag=True, help="Also print the stack trace of every failed run.")
@click.option(
    "--logs",
    type=click.IntRange(0, 1000),
    default=30,
    show_default=True,
    metavar="N",
    help="How many of the video's newest log lines to show (0: none).",
)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@server_options
@reports_errors
def status(item_id: str, stack: bool, logs: int, as_json: bool, url: str | None, token: str | None) -> None:
    """The whole story of one video: where it is, since when, every attempt and every error.

    \b
    Shows the video's status and stage, how long it has been there, its account, scenario and trace
    id, the last error; then the time spent in each stage, every run (one attempt of one stage) with
    its worker and error, the ordered history of events, and the video's newest log lines. Exits 1 if
    the server has no such item.

    \b
    Examples:
      stagewatch status vid-42            the story, as tables
      stagewatch status vid-42 --stack    with the stack trace of each failure
      stagewatch status vid-42 --json     the server's JSON, for jq
    """
    with connect(url, token) as client:
        item = client.get_item(item_id, history=True)
        if as_json:
            print_json(item)
            return
        lines = recent_logs(client, item_id, logs)
    render.show(render.item_story(item, datetime.now(UTC), stacks=stack, log_lines=lines))


def recent_logs(client: StagewatchClient, item_id: str, limit: int) -> list[Json] | None:
    """The video's newest log lines, oldest first; None when the server keeps no logs (an older one)."""
    if limit == 0:
        return None
    try:
        page = client.logs({"item_id": item_id, "limit": limit})
    except ClientError as exc:
        if exc.status == 404:
            return None
        raise
    return list(reversed(page.get("logs") or []))


# --- items -----------------------------------------------------------------------------------------


def split_statuses(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> list[str]:
    """``--status failed --status running`` and ``--status failed,running`` mean the same."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    known = [s.value for s in ItemStatus]
    for name in names:
        if name not in known:
            raise click.BadParameter(f"{name!r} is not a status; one of: {', '.join(known)}")
    return names


@click.command("items", short_help="List videos by status, stage, account or scenario.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    callback=split_statuses,
    metavar="STATUS",
    help="Only items in this status; repeat or comma-separate: --status failed,dead_lettered. "
    f"One of: {', '.join(s.value for s in ItemStatus)}.",
)
@click.option(
    "--stage", default=None, metavar="STAGE", help="Only items currently at this stage, e.g. download."
)
@click.option("--account", default=None, metavar="ACCOUNT", help="Only items of this account.")
@click.option("--scenario", default=None, metavar="SCENARIO", help="Only items of this scenario.")
@click.option("--prefix", default=None, metavar="PREFIX", help="Only items whose id starts with this.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE),
    default=50,
    metavar="N",
    show_default=True,
    help=f"Items per page (at most {MAX_PAGE}); with --all, the size of each page fetched.",
)
@click.option(
    "--cursor", default=None, metavar="CURSOR", help="Continue from the page the previous run pointed to."
)
@click.option("--all", "follow", is_flag=True, help="Fetch every page, not just the first.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@server_options
@reports_errors
def items(
    statuses: list[str],
    stage: str | None,
    account: str | None,
    scenario: str | None,
    prefix: str | None,
    limit: int,
    cursor: str | None,
    follow: bool,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """List videos, most recently changed first, filtered by status, stage, account or scenario.

    \b
    Examples:
      stagewatch items --status failed               what broke
      stagewatch items --status running --stage process
      stagewatch items --account acct-7 --all        every video of one account
    Prints one page (--limit) and the --cursor for the next one.
    """
    filters = {"status": statuses, "stage": stage, "account": account, "scenario": scenario, "prefix": prefix}
    with connect(url, token) as client:
        pages = list(fetch_pages(client, filters, cursor, limit, follow=follow))
    found = [item for page in pages for item in page["items"]]
    next_cursor = pages[-1].get("next_cursor")
    if as_json:
        print_json(pages[0] if len(pages) == 1 else {"items": found, "next_cursor": next_cursor})
        return
    print_items(found, next_cursor)


def fetch_pages(
    client: StagewatchClient, filters: dict[str, Any], cursor: str | None, limit: int, *, follow: bool
) -> Iterator[Json]:
    """The first page, and with ``follow`` every next one until the server says there is no more."""
    while True:
        page = client.list_items(filters, cursor=cursor, limit=limit)
        yield page
        next_cursor = page.get("next_cursor")
        if not follow or not next_cursor or next_cursor == cursor:
            return
        cursor = next_cursor


def print_items(found: list[Json], next_cursor: str | None) -> None:
    parts: list[RenderableType] = [Text("no items match")]
    if found:
        shown = f"{len(found)} item{'s' if len(found) != 1 else ''} shown"
        parts = [render.items_table(found, datetime.now(UTC)), Text(), Text(shown)]
    if next_cursor:
        parts.append(Text(f"more: repeat with --cursor {next_cursor} (same filters), or use --all"))
    render.show(*parts)


# --- summary ---------------------------------------------------------------------------------------


@click.command("summary", short_help="Counts per stage and status: the queue at a glance.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@server_options
@reports_errors
def summary(as_json: bool, url: str | None, token: str | None) -> None:
    """How many videos are at each stage, per status: the queue at a glance.

    \b
    Per stage: queued, running, waiting, failed, dead-lettered, cancelled, ready to publish,
    published, done (finished the stage) and the age of the oldest queued video.
    """
    with connect(url, token) as client:
        answer = client.summary()
    if as_json:
        print_json(answer)
        return
    generated = Text(f"as of {render.clock(answer.get('generated_at'))}")
    tables = [piece for table in render.summary_tables(answer) for piece in (table, Text())]
    render.show(*tables, generated)


# --- send-events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One event as written in the file (UTF-8 bytes), with its 1-based line number."""

    number: int
    data: bytes


@dataclass(slots=True)
class Totals:
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    errors: list[Json] = field(default_factory=list)

    def add(self, answer: Json, batch: Sequence[Line]) -> list[Json]:
        """Count one batch's answer; give its rejections with their file line numbers."""
        self.accepted += int(answer.get("accepted") or 0)
        self.duplicate += int(answer.get("duplicate") or 0)
        self.rejected += int(answer.get("rejected") or 0)
        found = [{"line": batch[e["index"]].number, **e} for e in answer.get("errors") or []]
        self.errors += found
        return found

    def counts(self) -> str:
        return f"{self.accepted} accepted, {self.duplicate} duplicate, {self.rejected} rejected"

    def as_json(self) -> Json:
        errors = [{k: v for k, v in e.items() if k != "index"} for e in self.errors]
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "rejected": self.rejected,
            "errors": errors,
        }


@click.command("send-events", short_help="Send events from a JSON Lines file (or stdin) to the server.")
@click.argument("source", type=click.File("rb"), metavar="FILE.jsonl")
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH),
    default=500,
    metavar="N",
    show_default=True,
    help=f"Events per request (at most {MAX_BATCH}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the totals and rejections as JSON.")
@server_options
@reports_errors
def send_events(
    source: IO[bytes], batch_size: int, as_json: bool, url: str | None, token: str | None
) -> None:
    """Send events from a JSON Lines file (one event per line; - for stdin) to the server.

    \b
    The whole file is checked first: if any line is not a JSON object, those lines are named and
    nothing is sent (exit 2). Events go in batches; a batch is sent again on a connection error or a
    server error (safe: an event id already stored counts as a duplicate), and after the wait a busy
    server asks for (503 with Retry-After, for up to 10 minutes in all). Each rejected event is
    printed with its line number and field. Exits 1 if the server rejected any event.

    \b
    A line looks like (see docs/events.md for every field):
      {"id": "e-17", "type": "run.failed", "item_id": "vid-42", "stage": "download",
       "attempt": 1, "error": {"type": "HTTPError", "message": "403 Forbidden"}}
    """
    lines = read_lines(source)
    with connect(url, token) as client:
        totals = send_batches(client, lines, batch_size, quiet=as_json)
    if as_json:
        print_json(totals.as_json())
    else:
        click.echo(f"{len(lines)} event{'' if len(lines) == 1 else 's'}: {totals.counts()}")
    if totals.rejected:
        raise click.exceptions.Exit(1)


def read_lines(source: IO[bytes]) -> list[Line]:
    """Every non-blank line; exits 2, naming the lines, if any is not a JSON object."""
    lines = [Line(n, data.strip()) for n, data in enumerate(source, start=1) if data.strip()]
    if lines and lines[0].data.startswith(UTF8_BOM):
        lines[0] = Line(lines[0].number, lines[0].data[len(UTF8_BOM) :])
    problems = [(line.number, problem) for line in lines if (problem := json_problem(line.data))]
    if problems:
        report_bad_lines(getattr(source, "name", "input"), problems)
        raise click.exceptions.Exit(2)
    return lines


def json_problem(data: bytes) -> str | None:
    """Why this line cannot be an event, or None if it is a JSON object. Parsed with the server's own
    parser (orjson), so a line that passes here is never refused as malformed there."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} (column {exc.colno})"
    return None if isinstance(value, dict) else f"not a JSON object but {type(value).__name__}"


def report_bad_lines(name: str, problems: list[tuple[int, str]]) -> None:
    for number, problem in problems[:MAX_LINE_PROBLEMS]:
        click.echo(f"{name}: line {number}: {problem}", err=True)
    if len(problems) > MAX_LINE_PROBLEMS:
        click.echo(f"{name}: ... and {len(problems) - MAX_LINE_PROBLEMS} more bad lines", err=True)
    click.echo(f"error: {len(problems)} bad line(s) in {name}; nothing was sent", err=True)


def send_batches(client: StagewatchClient, lines: list[Line], size: int, *, quiet: bool) -> Totals:
    """Send every batch, printing rejections as they come; on failure, say where it stopped."""
    totals = Totals()
    for start in range(0, len(lines), size):
        batch = lines[start : start + size]
        try:
            rejected = send_batch(client, batch, totals)
        except ClientError as exc:
            raise stopped_at(exc, batch, totals) from None
        if not quiet:
            for error in rejected:
                click.echo(rejection_line(error))
    return totals


def send_batch(client: StagewatchClient, batch: Sequence[Line], totals: Totals) -> list[Json]:
    """Post one batch; a batch too large for the server is split in two and each half sent."""
    body = b"[" + b",".join(line.data for line in batch) + b"]"
    try:
        answer = client.post_events_retrying(body, notify=lambda note: click.echo(note, err=True))
    except ClientError as exc:
        if exc.status != 413 or len(batch) == 1:
            raise
        middle = len(batch) // 2
        return send_batch(client, batch[:middle], totals) + send_batch(client, batch[middle:], totals)
    return totals.add(answer, batch)


def stopped_at(exc: ClientError, batch: Sequence[Line], totals: Totals) -> ClientError:
    confirmed = totals.accepted + totals.duplicate + totals.rejected
    done = f"before that: {totals.counts()}" if confirmed else "no batch had been confirmed yet"
    message = (
        f"{exc} (stopped at the batch of lines {batch[0].number}-{batch[-1].number}; {done}; "
        "sending the file again is safe)"
    )
    return ClientError(message, exit_code=exc.exit_code, status=exc.status)


def rejection_line(error: Json) -> str:
    where = f"field {error['field']}: " if error.get("field") else ""
    event = f" (event {error['id']})" if error.get("id") else ""
    return f"line {error['line']}: rejected{event}: {where}{error.get('error')}"
