"""What the demo shows while it runs: a live table refreshed twice a second from the server's
``GET /v1/summary`` (a row per stage, totals, elapsed time, the faults injected so far), or, when
stdout is not a terminal, one plain progress line every few seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from stagewatch.demo.faults import DESCRIPTIONS, Fault

Json = dict[str, Any]
PLAIN_EVERY = 5.0
STAGE_COLUMNS = ("queued", "running", "failed", "done")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One refresh: the server's summary (None if it did not answer) and what the simulation knows."""

    summary: Json | None
    elapsed: float
    submitted: int
    videos: int
    injected: dict[Fault, int]
    planned: dict[Fault, int]
    workers: dict[str, tuple[int, int]] = field(default_factory=dict)


def stages_of(summary: Json | None) -> list[Json]:
    pipelines = (summary or {}).get("pipelines") or []
    found = [p for p in pipelines if p.get("pipeline") == "instagram"] or pipelines[:1]
    return list(found[0].get("stages") or []) if found else []


def totals(snapshot: Snapshot) -> dict[str, int]:
    """created (items the server knows), published, failed (now), and in flight (queued or running)."""
    stages = stages_of(snapshot.summary)

    def total(key: str) -> int:
        return sum(int(stage.get(key) or 0) for stage in stages)

    created = sum(int(p.get("items") or 0) for p in (snapshot.summary or {}).get("pipelines") or [])
    return {
        "created": created,
        "published": total("published"),
        "failed": total("failed") + total("dead_lettered"),
        "in flight": total("queued") + total("running") + total("ready_to_publish"),
    }


def stage_table(snapshot: Snapshot) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="videos per stage (from GET /v1/summary)", title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("workers", justify="right", style="dim")
    for name in STAGE_COLUMNS:
        table.add_column(name, justify="right")
    for stage in stages_of(snapshot.summary):
        busy, size = snapshot.workers.get(stage["stage"], (0, 0))
        cells = [_count(stage, name) for name in STAGE_COLUMNS]
        table.add_row(stage["stage"], f"{busy}/{size}" if size else "", *cells)
    return table


def _count(stage: Json, name: str) -> Text:
    value = int(stage.get(name) or 0) + (int(stage.get("dead_lettered") or 0) if name == "failed" else 0)
    style = {"failed": "bold red", "running": "blue", "queued": "yellow"}.get(name, "green")
    return Text(str(value), style=style if value else "dim")


def fault_table(snapshot: Snapshot) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="faults injected (videos hit / planned)", title_justify="left")
    table.add_column("fault")
    table.add_column("hit", justify="right")
    for fault in Fault:
        planned = snapshot.planned.get(fault, 0)
        if planned:
            hit = snapshot.injected.get(fault, 0)
            table.add_row(DESCRIPTIONS[fault], Text(f"{hit}/{planned}", style="bold" if hit else "dim"))
    return table


def headline(snapshot: Snapshot) -> Text:
    counts = totals(snapshot)
    line = Text(f"{snapshot.elapsed:5.0f}s  submitted {snapshot.submitted}/{snapshot.videos}   ")
    line.append(f"created {counts['created']}   ")
    line.append(f"published {counts['published']}", style="bold green")
    line.append("   ")
    line.append(f"failed {counts['failed']}", style="bold red" if counts["failed"] else "")
    line.append(f"   in flight {counts['in flight']}")
    if snapshot.summary is None:
        line.append("   (the server did not answer)", style="yellow")
    return line


def render(snapshot: Snapshot) -> RenderableType:
    grid = Table.grid(padding=(0, 4))
    grid.add_row(stage_table(snapshot), fault_table(snapshot))
    return Group(headline(snapshot), grid, Text("Ctrl-C stops the demo", style="dim"))


def plain_line(snapshot: Snapshot) -> str:
    counts = totals(snapshot)
    stages = " ".join(
        f"{s['stage']}:{s.get('queued', 0)}q/{s.get('running', 0)}r/{s.get('done', 0)}d"
        for s in stages_of(snapshot.summary)
    )
    hits = ", ".join(f"{fault.value} {n}" for fault, n in snapshot.injected.items()) or "none yet"
    return (
        f"[{snapshot.elapsed:4.0f}s] submitted {snapshot.submitted}/{snapshot.videos} | created "
        f"{counts['created']} published {counts['published']} failed {counts['failed']} | {stages} | "
        f"faults: {hits}"
    )


class LiveView:
    """The live table on a terminal; a plain line every few seconds otherwise. Use with ``with``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._printed_at = 0.0

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4, auto_refresh=False)
            self._live.start()
        return self

    def update(self, snapshot: Snapshot, *, last: bool = False) -> None:
        """Show ``snapshot``; without a terminal, only every few seconds, or when it is the ``last``."""
        if self._live is not None:
            self._live.update(render(snapshot), refresh=True)
        elif last or time.monotonic() - self._printed_at >= PLAIN_EVERY:
            self._printed_at = time.monotonic()
            self.console.print(plain_line(snapshot), markup=False, highlight=False, soft_wrap=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
