"""Turning the API's JSON into what a person reads in a terminal: rich tables, ``3m 12s``, ``5m ago``.

Apart from ``make_console`` and ``show``, everything here is pure: JSON in, renderables or strings out,
with ``now`` passed in. Text that came from users or workers (ids, error messages) is always wrapped in
``Text`` so brackets in it are never taken for rich markup. Each status is a word as well as a colour, so
the output reads the same without colour. Tables hide their least needed columns, and say so, rather than
squeeze ids and statuses out of sight in a narrow terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from rich import box
from rich.console import (
    Console,
    ConsoleOptions,
    Group,
    JustifyMethod,
    RenderableType,
    RenderResult,
)
from rich.table import Table
from rich.text import Text

Json = dict[str, Any]

# Wide enough that piped output (grep, less, a ticket) keeps each row on one line.
PIPE_WIDTH = 200
NONE = "—"
MESSAGE_CAP = 1000

STATUS_STYLE = {
    "received": "white",
    "queued": "yellow",
    "waiting": "yellow",
    "running": "bold blue",
    "ready_to_publish": "bold cyan",
    "published": "bold green",
    "succeeded": "green",
    "failed": "bold red",
    "timed_out": "bold red",
    "dead_lettered": "bold magenta",
    "cancelled": "dim",
}

STATUS_MEANING = {
    "received": "recorded; no stage has started yet",
    "queued": "waiting in the queue for {stage}",
    "waiting": "{stage} is waiting (retry backoff or a limit)",
    "running": "{stage} is running now",
    "ready_to_publish": "processed; ready to be published",
    "published": "finished every stage",
    "failed": "{stage} failed; see the last error",
    "dead_lettered": "{stage} gave up after its last attempt; needs a person",
    "cancelled": "cancelled at {stage}",
}

# The summary's counts: key in the API, header (two lines keep it narrow), and which to hide first when the
# terminal is too narrow for all of them.
SUMMARY_COLUMNS = (
    ("queued", "queued", 0),
    ("running", "running", 0),
    ("waiting", "waiting", 0),
    ("failed", "failed", 0),
    ("dead_lettered", "dead-\nlettered", 0),
    ("cancelled", "cancelled", 3),
    ("ready_to_publish", "ready to\npublish", 1),
    ("published", "published", 2),
    ("done", "done", 0),
)
_ALARM_COLUMNS = frozenset({"failed", "dead_lettered"})


def make_console() -> Console:
    """A console for stdout; piped output gets a wide fixed width unless COLUMNS is set."""
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    return Console(width=width, highlight=False, soft_wrap=False)


def show(*renderables: RenderableType) -> None:
    """Print to stdout; when piped, without the padding rich adds, so every line ends at its text."""
    console, whole = make_console(), Group(*renderables)
    if console.is_terminal:
        console.print(whole)
        return
    with console.capture() as captured:
        console.print(whole)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


# --- times and durations ---------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    """An API time (ISO 8601 UTC, ``...Z``) as an aware datetime; None stays None."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def duration(seconds: float | None) -> str:
    """``850ms``, ``45s``, ``3m 12s``, ``2h 5m``, ``3d 4h``; a dash when unknown."""
    if seconds is None:
        return NONE
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    for size, unit, next_size, next_unit in (
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "m"),
        (60, "m", 1, "s"),
    ):
        if whole >= size:
            rest = (whole % size) // next_size
            return f"{whole // size}{unit} {rest}{next_unit}" if rest else f"{whole // size}{unit}"
    return f"{whole}s"


def ago(moment: datetime | None, now: datetime) -> str:
    """``5m ago``, ``just now``, or ``in 3s`` when a client's clock runs ahead of ours."""
    if moment is None:
        return NONE
    gap = (now - moment).total_seconds()
    if abs(gap) < 1:
        return "just now"
    return f"{duration(gap)} ago" if gap > 0 else f"in {duration(-gap)}"


def clock(value: str | None) -> str:
    """An API time as ``2026-01-10 10:00:05Z`` (UTC, whole seconds)."""
    moment = parse_time(value)
    return NONE if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def seconds_between(start: str | None, end: str | None) -> float | None:
    first, last = parse_time(start), parse_time(end)
    return None if first is None or last is None else (last - first).total_seconds()


# --- small pieces ----------------------------------------------------------------------------------


def status_text(status: str | None) -> Text:
    """The status word, coloured; the word alone says it all when colour is off."""
    if not status:
        return Text(NONE)
    return Text(status, style=STATUS_STYLE.get(status, ""))


def error_line(error: Json | None, cap: int = MESSAGE_CAP) -> str:
    """``Type: message`` on one line, cut at ``cap`` characters."""
    if not error:
        return ""
    message = " ".join(str(error.get("message") or "").split())
    line = f"{error.get('type') or 'Error'}: {message}" if message else str(error.get("type") or "Error")
    return line if len(line) <= cap else line[: cap - 1] + "…"


def _text(value: Any, style: str = "") -> Text:
    return Text(NONE if value is None or value == "" else str(value), style=style)


def _count(value: int, *, alarm: bool = False) -> Text:
    if not value:
        return Text("0", style="dim")
    return Text(str(value), style="bold red" if alarm else "bold")


# --- tables that fit a narrow terminal ------------------------------------------------------------


class Column(NamedTuple):
    """How one column behaves when the terminal is narrow."""

    header: str
    justify: JustifyMethod = "left"
    # 0: whole (ids, statuses, stages, durations): never wrapped or cut, as wide as its widest cell.
    # Otherwise free text, wrapped but never narrower than this.
    wrap_at: int = 0
    # 0: always shown. Otherwise hidden, highest first, when the terminal is too narrow for everything.
    drop: int = 0
    # Free text cut with "…" instead of wrapped, to keep one line per row.
    one_line: bool = False

    @property
    def title(self) -> str:
        """The header on one line: ``dead-\\nlettered`` is ``dead-lettered``, ``ready to\\npublish`` is
        ``ready to publish``."""
        return self.header.replace("-\n", "-").replace("\n", " ")


STAGE_COLUMNS = (
    Column("stage"),
    Column("time in stage", "right"),
    Column("runs", "right"),
    Column("outcome"),
)
RUN_COLUMNS = (
    Column("stage"),
    Column("attempt", "right"),
    Column("status"),
    Column("queued for", "right"),
    Column("ran for", "right"),
    Column("worker / revision", wrap_at=10, drop=1),
    Column("error", wrap_at=16),
)
HISTORY_COLUMNS = (
    Column("time (UTC)"),
    Column("after", "right", drop=1),
    Column("event"),
    Column("stage"),
    Column("attempt", "right"),
    Column("detail", wrap_at=16),
)
ITEM_COLUMNS = (
    Column("id"), Column("status"), Column("stage"), Column("account", wrap_at=8, drop=4),
    Column("scenario", wrap_at=8, drop=5), Column("attempts", "right", drop=3), Column("updated", "right"),
    Column("last error", wrap_at=16, drop=2, one_line=True),
)  # fmt: skip
COLUMN_GAP = 2


@dataclass(frozen=True)
class FittedTable:
    """A table that, when printed, hides its least needed columns if the terminal is too narrow for
    them all, and says which; the columns that stay are never squeezed out of sight."""

    columns: Sequence[Column]
    rows: Sequence[Sequence[Text]]
    title: str | None = None
    footer: Sequence[Text] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = columns_that_fit(self.columns, self.rows, options.max_width)
        yield build_table(self.keep(shown), options.max_width)
        hidden = [column.title for i, column in enumerate(self.columns) if i not in shown]
        if hidden:
            note = f"(hidden to fit the terminal: {', '.join(hidden)}; widen it or use --json)"
            yield Text(note, style="dim")

    def keep(self, shown: Sequence[int]) -> FittedTable:
        """The same table with only the columns at ``shown``."""
        footer = [self.footer[i] for i in shown] if self.footer else None
        columns, rows = [self.columns[i] for i in shown], [[row[i] for i in shown] for row in self.rows]
        return FittedTable(columns, rows, self.title, footer)


def columns_that_fit(columns: Sequence[Column], rows: Sequence[Sequence[Text]], width: int) -> list[int]:
    """The indexes of the columns to show: all of them, minus the droppable ones that do not fit."""
    needed = _needed_widths(columns, rows)
    shown = list(range(len(columns)))
    for index in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop):
        if sum(needed[i] for i in shown) + COLUMN_GAP * (len(shown) - 1) <= width:
            break
        shown.remove(index)
    return shown


def _needed_widths(columns: Sequence[Column], rows: Sequence[Sequence[Text]]) -> list[int]:
    return [column.wrap_at or _widest(column, i, rows) for i, column in enumerate(columns)]


def _widest(column: Column, index: int, rows: Sequence[Sequence[Text]]) -> int:
    header = max(len(part) for part in column.header.split("\n"))
    return max([header, *(row[index].cell_len for row in rows)])


def build_table(fitted: FittedTable, width: int) -> Table:
    """The rich table; a one-line column gets the width the others leave, so it is cut, not them."""
    needed = _needed_widths(fitted.columns, fitted.rows)
    natural = [_widest(column, i, fitted.rows) for i, column in enumerate(fitted.columns)]
    table = Table(
        title=fitted.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
        collapse_padding=True, show_footer=fitted.footer is not None,
    )  # fmt: skip
    for index, column in enumerate(fitted.columns):
        spare = width - sum(natural) + natural[index] - COLUMN_GAP * (len(natural) - 1)
        footer = fitted.footer[index] if fitted.footer else ""
        sizing = _sizing(column, needed[index], spare)
        table.add_column(column.header, footer=footer, justify=column.justify, **sizing)
    for row in fitted.rows:
        table.add_row(*row)
    return table


def _sizing(column: Column, needed: int, spare: int) -> dict[str, Any]:
    if not column.wrap_at:
        return {"no_wrap": True, "min_width": needed}
    if column.one_line:
        return {"no_wrap": True, "overflow": "ellipsis", "min_width": needed, "max_width": max(needed, spare)}
    return {"overflow": "fold", "min_width": needed}


# --- one item: the status command ------------------------------------------------------------------


def item_story(
    item: Json, now: datetime, *, stacks: bool = False, log_lines: Sequence[Json] | None = None
) -> Group:
    """Everything ``stagewatch status`` prints: header, time per stage, runs, stacks, history, logs."""
    runs: list[Json] = item.get("runs") or []
    parts: list[RenderableType] = [item_header(item, now)]
    if runs:
        parts += [stage_times(runs, now), runs_table(runs, now)]
    if stacks:
        parts += list(stack_blocks(runs))
    if item.get("history") is not None:
        parts.append(history_table(item["history"]))
    if log_lines is not None:
        parts.append(logs_block(log_lines))
    return Group(*(piece for part in parts for piece in (part, Text())))


def item_header(item: Json, now: datetime) -> Table:
    """Who, where, since when and what went wrong, as label/value lines."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value in header_rows(item, now):
        grid.add_row(label, value)
    return grid


def header_rows(item: Json, now: datetime) -> Iterator[tuple[str, Text]]:
    yield "Item", Text(str(item["item_id"]), style="bold")
    yield "Status", _status_line(item)
    yield "Since", _since_line(item, now)
    for label, key in (("Account", "account"), ("Scenario", "scenario"), ("Pipeline", "pipeline")):
        yield label, _text(item.get(key))
    yield "Trace id", _text(item.get("trace_id"))
    yield "Attempts", Text(f"{item.get('attempts', 0)} at {item.get('stage') or NONE}")
    if item.get("stuck"):
        yield "Stuck", Text(f"STUCK: {item.get('stuck_reason') or 'no reason given'}", style="bold red")
    yield "Last error", _last_error_line(item, now)


def _status_line(item: Json) -> Text:
    status, stage = item.get("status") or "", item.get("stage") or NONE
    meaning = STATUS_MEANING.get(status, "").format(stage=stage)
    line = Text.assemble(status_text(status), "  at stage ", Text(stage, style="bold"))
    return line.append(f"  ({meaning})" if meaning else "")


def _since_line(item: Json, now: datetime) -> Text:
    since = parse_time(item.get("status_since"))
    if since is None:
        return Text(NONE)
    held = duration((now - since).total_seconds())
    return Text(f"{clock(item['status_since'])}  (for {held})")


def _last_error_line(item: Json, now: datetime) -> Text:
    error = item.get("last_error")
    if not error:
        return Text("none")
    where = f"{error.get('stage')} attempt {error.get('attempt')}, {ago(parse_time(error.get('at')), now)}"
    recovered = item.get("status") not in ("failed", "dead_lettered") and error.get("stage") in (
        item.get("stages_done") or []
    )
    note = f"  ({where}{'; since recovered' if recovered else ''})"
    return Text.assemble(Text(error_line(error), style="" if recovered else "red"), note)


def stage_times(runs: Sequence[Json], now: datetime) -> FittedTable:
    """Per stage, in the order the item reached it: how long it spent there, and how it ended."""
    rows = []
    for stage, stage_runs in _by_stage(runs):
        spent, open_ = _time_in_stage(stage_runs, now)
        spent_text = duration(spent) + (" so far" if open_ else "")
        rows.append(
            (Text(stage), Text(spent_text), Text(str(len(stage_runs))), status_text(stage_runs[-1]["status"]))
        )
    return FittedTable(STAGE_COLUMNS, rows, "Time per stage")


def _by_stage(runs: Iterable[Json]) -> list[tuple[str, list[Json]]]:
    grouped: dict[str, list[Json]] = {}
    for run in runs:
        grouped.setdefault(run["stage"], []).append(run)
    return list(grouped.items())


def _time_in_stage(runs: Sequence[Json], now: datetime) -> tuple[float | None, bool]:
    """From the first report of the stage to its last end, or to now while a run is still open."""
    starts = [t for run in runs for t in map(parse_time, _run_times(run)) if t is not None]
    if not starts:
        return None, False
    open_ = any(run.get("ended_at") is None for run in runs)
    ends = [t for t in (parse_time(run.get("ended_at")) for run in runs) if t is not None]
    end = now if open_ or not ends else max(ends)
    return max(0.0, (end - min(starts)).total_seconds()), open_


def _run_times(run: Json) -> tuple[str | None, str | None, str | None]:
    return run.get("enqueued_at"), run.get("started_at"), run.get("ended_at")


def runs_table(runs: Sequence[Json], now: datetime) -> FittedTable:
    """Every run (one attempt of one stage) in the order they began."""
    return FittedTable(RUN_COLUMNS, [_run_cells(run, now) for run in runs], "Runs")


def _run_cells(run: Json, now: datetime) -> tuple[Text, ...]:
    worker = " / ".join(str(part) for part in (run.get("worker"), run.get("revision")) if part)
    return (
        Text(str(run["stage"])),
        Text(str(run["attempt"])),
        status_text(run.get("status")),
        Text(_so_far(run, now, "queued", "enqueued_at", "queued_seconds")),
        Text(_so_far(run, now, "running", "started_at", "duration_seconds")),
        _text(worker),
        Text(error_line(run.get("error")), style="red"),
    )


def _so_far(run: Json, now: datetime, status: str, since_key: str, seconds_key: str) -> str:
    """The run's time in a phase: as reported, or, while the run is still in it, up to now."""
    since = parse_time(run.get(since_key))
    if run.get("status") == status and since is not None:
        return duration(max(0.0, (now - since).total_seconds())) + " so far"
    return duration(run.get(seconds_key))


def stack_blocks(runs: Iterable[Json]) -> Iterator[RenderableType]:
    """The stack of every failed run that reported one (``status --stack``)."""
    for run in runs:
        error = run.get("error") or {}
        if error.get("stack"):
            title = f"Stack of {run['stage']} attempt {run['attempt']} ({error_line(error, 200)})"
            yield Group(Text(title, style="bold red"), Text(str(error["stack"]).rstrip()))


def history_table(history: Sequence[Json]) -> FittedTable:
    """The item's events in the order they happened; runs of heartbeats are folded into one line."""
    first = history[0].get("time") if history else None
    rows = [_history_cells(event, repeats, first) for event, repeats in fold_heartbeats(history)]
    return FittedTable(HISTORY_COLUMNS, rows, "History")


def fold_heartbeats(history: Iterable[Json]) -> list[tuple[Json, int]]:
    """Consecutive heartbeats of one run become one entry (the last of them) with a count."""
    folded: list[tuple[Json, int]] = []
    for event in history:
        if folded and _same_heartbeat_run(folded[-1][0], event):
            folded[-1] = (event, folded[-1][1] + 1)
        else:
            folded.append((event, 1))
    return folded


def _same_heartbeat_run(previous: Json, event: Json) -> bool:
    both = previous.get("type") == event.get("type") == "run.heartbeat"
    return both and previous.get("run_id") == event.get("run_id")


def _history_cells(event: Json, repeats: int, first: str | None) -> tuple[Text, ...]:
    after = seconds_between(first, event.get("time"))
    kind = str(event.get("type")) + (f" x{repeats}" if repeats > 1 else "")
    style = "red" if event.get("type") in ("run.failed", "run.timed_out") else ""
    return (
        Text(clock(event.get("time"))),
        Text("+" + duration(after) if after is not None else NONE),
        Text(kind, style=style),
        _text(event.get("stage")),
        _text(event.get("attempt")),
        Text("; ".join(event_details(event)), style=style),
    )


def event_details(event: Json) -> Iterator[str]:
    """The facts worth reading in one event: its error, note, progress, worker and item fields."""
    if event.get("error"):
        yield error_line(event["error"])
    if event.get("note"):
        yield str(event["note"])
    if event.get("progress") is not None:
        yield f"{float(event['progress']):.0%} done"
    if event.get("worker") or event.get("revision"):
        yield "on " + " / ".join(str(p) for p in (event.get("worker"), event.get("revision")) if p)
    for key in ("account", "scenario", "source", "actor"):
        if event.get(key) and event.get("type", "").startswith("item."):
            yield f"{key} {event[key]}"
    for key, value in (event.get("attrs") or {}).items():
        yield f"{key}={value}"


# --- lists: the items command ----------------------------------------------------------------------


def items_table(items: Sequence[Json], now: datetime) -> FittedTable:
    """One row per item: where it is, for whom, when it last changed and its last error."""
    return FittedTable(ITEM_COLUMNS, [_item_cells(item, now) for item in items])


def _item_cells(item: Json, now: datetime) -> tuple[Text, ...]:
    status = status_text(item.get("status"))
    if item.get("stuck"):
        status.append(" (stuck)", style="bold red")
    return (
        Text(str(item["item_id"]), style="bold"),
        status,
        _text(item.get("stage")),
        _text(item.get("account")),
        _text(item.get("scenario")),
        Text(str(item.get("attempts", 0))),
        Text(ago(parse_time(item.get("updated_at")), now)),
        Text(error_line(item.get("last_error"), 120), style="red"),
    )


# --- the summary command ---------------------------------------------------------------------------


def summary_tables(summary: Json) -> Iterator[FittedTable]:
    """One table per pipeline: per stage, how many items are in each status, and the oldest queued."""
    for pipeline in summary.get("pipelines") or []:
        yield _pipeline_table(pipeline)


def _pipeline_table(pipeline: Json) -> FittedTable:
    stages: list[Json] = pipeline.get("stages") or []
    counts = [Column(header, "right", drop=drop) for _key, header, drop in SUMMARY_COLUMNS]
    columns = [Column("stage"), *counts, Column("oldest\nqueued", "right")]
    totals = [_count(sum(int(stage.get(key) or 0) for stage in stages), alarm=key in _ALARM_COLUMNS)
              for key, _header, _drop in SUMMARY_COLUMNS]  # fmt: skip
    title = f"{pipeline['pipeline']}: {pipeline.get('items', 0)} items"
    return FittedTable(
        columns, [_summary_cells(stage) for stage in stages], title, [Text("total"), *totals, Text()]
    )


def _summary_cells(stage: Json) -> list[Text]:
    cells = [Text(str(stage["stage"]), style="bold")]
    cells += [_count(int(stage.get(key) or 0), alarm=key in _ALARM_COLUMNS) for key, _, _ in SUMMARY_COLUMNS]
    cells.append(Text(duration(stage.get("oldest_queued_age_seconds"))))
    return cells


# --- log lines ---------------------------------------------------------------------------------------

LEVEL_STYLE = {
    "debug": "dim",
    "info": "cyan",
    "warning": "yellow",
    "error": "bold red",
    "critical": "bold white on red",
}


def render_line(line: Json) -> Text:
    """``time LEVEL [item stage] message``, then the exception indented. Worker text is never markup."""
    level = str(line.get("level") or "info")
    text = Text(f"{line['time']} ")
    text.append(f"{level.upper():<8}", style=LEVEL_STYLE.get(level, ""))
    where = " ".join(str(line[key]) for key in ("item_id", "stage") if line.get(key))
    if where:
        text.append(f" [{where}]", style="bold")
    text.append(f" {line.get('message') or ''}")
    for stack_line in str(line.get("exception") or "").rstrip("\n").splitlines():
        text.append(f"\n    {stack_line}", style="dim")
    return text


def logs_block(lines: Sequence[Json]) -> Group:
    """The video's log lines under a heading, oldest first, or a line saying there are none."""
    if not lines:
        return Group(Text("Logs", style="bold"), Text("no log lines for this video", style="dim"))
    heading = f"Logs (the newest {len(lines)}; stagewatch logs --item ID for more)"
    return Group(Text(heading, style="bold"), *(render_line(line) for line in lines))
