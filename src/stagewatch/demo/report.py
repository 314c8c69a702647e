"""What the demo prints around the live view: the banner (where the server is, what to try) and the
final summary (videos per status, and a video id for each story worth reading)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stagewatch.cli.client import ClientError, StagewatchClient
from stagewatch.demo.faults import DESCRIPTIONS, Fault, FaultPlan
from stagewatch.demo.world import ACCOUNTS, SCENARIOS, VIRAL_ACCOUNT, Ending, Ledger, Outcome, video_id
from stagewatch.domain.statuses import ItemStatus

DEFAULT_URL = "http://127.0.0.1:8000"
# The stories the summary names first, in this order; then every other fault.
FIRST_FAULTS = (
    Fault.DOWNLOAD_404, Fault.RATE_LIMIT, Fault.RUNAWAY, Fault.WORKER_KILLED, Fault.PUBLISH_QUOTA,
    Fault.DUPLICATE_WEBHOOK,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DemoInfo:
    """Where the demo's server and files are, and what it simulates."""

    url: str
    requested_port: int
    port: int
    db_path: Path
    workdir: Path
    seed: int
    videos: int
    rate: float
    speed: float
    token: str


def banner(console: Console, info: DemoInfo) -> None:
    console.print(
        Text.assemble(
            ("stagewatch demo", "bold"),
            ": a simulated Instagram video pipeline (webhook → download → Pub/Sub → Cloud Run → "
            "Instagram), reported through the stagewatch SDK",
        )
    )
    if info.port != info.requested_port:
        console.print(Text(f"port {info.requested_port} is busy: using {info.port} instead", style="yellow"))
    console.print(_where(info))
    console.print(Text("\nTry, in another terminal:", style="bold"))
    if info.url != DEFAULT_URL:
        console.print(Text(f"  export STAGEWATCH_URL={info.url}      so the commands find this server"))
    console.print(Text(f"  export STAGEWATCH_TOKEN={info.token}"))
    first = video_id(info.seed, 0)
    for command, meaning in (
        (f"stagewatch status {first}", "the whole story of the first video"),
        ("stagewatch items --status dead_lettered", "what broke for good (also: --status failed)"),
        ("stagewatch dlq list", "the dead-letter queue; `stagewatch dlq replay --item ID` re-runs one"),
        (f"stagewatch logs --item {first}", "its workers' log lines"),
        ("stagewatch audit", "who did what (a cancel, a replay), when and why"),
    ):
        console.print(Text(f"  {command:<38} {meaning}"))
    console.print()


def _where(info: DemoInfo) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    stream = (
        f"{info.videos} videos at {info.rate:g}/s from {len(ACCOUNTS)} accounts ({', '.join(SCENARIOS)}); "
        f"seed {info.seed} (repeat with --seed {info.seed}); speed {info.speed:g}x; and {VIRAL_ACCOUNT}, "
        "which already published its 50 posts of the day"
    )
    for label, value in (
        ("dashboard", f"{info.url}/   (log in with the token below)"),
        ("API docs", f"{info.url}/docs"),
        ("counts", f"{info.url}/v1/summary"),
        ("database", str(info.db_path)),
        ("logs", f"{info.workdir / 'server.log'}, {info.workdir / 'workers.log'}"),
        ("token", f"{info.token}   (admin; the demo's workers use it too; keep it secret)"),
        ("stream", stream),
    ):
        grid.add_row(f"  {label}", Text(value))
    return grid


def status_counts(url: str, token: str | None = None) -> Counter[str]:
    """How many items the server holds in each status (every page of ``GET /v1/items``)."""
    counts: Counter[str] = Counter()
    cursor: str | None = None
    with StagewatchClient(url, token, timeout=10) as client:
        while True:
            page = client.list_items({}, cursor=cursor, limit=500)
            counts.update(item["status"] for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return counts


def examples(
    plan: FaultPlan, endings: list[Ending], remarks: Mapping[str, str], submitted: int
) -> Iterator[tuple[str, str, str]]:
    """(story, video id, how it ended): a clean published video, then one video per fault."""
    ended = {ending.video.index: ending for ending in endings}
    clean = next((e for e in endings if e.video.fault is None and e.outcome is Outcome.PUBLISHED), None)
    if clean is not None:
        yield "published, nothing went wrong", clean.video.video_id, _how(clean, remarks)
    order = [*FIRST_FAULTS, *(fault for fault in Fault if fault not in FIRST_FAULTS)]
    for fault in order:
        for index in plan.videos_with(fault)[:1]:
            ending = ended.get(index)
            how = (
                _how(ending, remarks) if ending else "not finished" if index < submitted else "not submitted"
            )
            yield DESCRIPTIONS[fault], video_id(plan.seed, index), how


def _how(ending: Ending, remarks: Mapping[str, str]) -> str:
    """How a video ended, in the words a user would use, with the control plane's reason."""
    outcome, stage = ending.outcome, ending.stage
    if outcome is Outcome.FAILED:
        how = f"failed at {stage}"
    elif outcome is Outcome.DEAD_LETTERED:
        how = f"dead-lettered at {stage} (replay: stagewatch dlq replay --item {ending.video.video_id})"
    elif outcome is Outcome.WAITING:
        how = f"waiting at {stage}: {ending.detail}"
    else:
        how = outcome.value
    remark = remarks.get(ending.video.video_id)
    return f"{how}; {remark}" if remark else how


def final_summary(
    console: Console,
    info: DemoInfo,
    plan: FaultPlan,
    ledger: Ledger,
    remarks: Mapping[str, str],
    why: str,
    elapsed: float,
) -> None:
    """Why and when the demo stopped, the videos per status, and a video id for each story."""
    console.print(Text(f"\nDemo stopped after {elapsed:.0f} s ({why}).", style="bold"))
    console.print(_status_line(info.url, info.token))
    stories = list(examples(plan, ledger.endings(), remarks, ledger.submitted))
    console.print(_stories_table(stories))
    pick = next((video for story, video, _ in stories if story == DESCRIPTIONS[Fault.RATE_LIMIT]), None)
    pick = pick or (stories[0][1] if stories else "VIDEO")
    where = "" if info.url == DEFAULT_URL else f" --url {info.url}"
    console.print(Text(f"Read one:  stagewatch status {pick}{where}   (--stack for stack traces)"))
    console.print(Text(f"           stagewatch logs --item {pick}{where}"))
    console.print(Text(f"           stagewatch items --status failed{where}"))


def _status_line(url: str, token: str) -> Text:
    try:
        counts = status_counts(url, token)
    except ClientError as error:
        return Text(f"(could not count videos by status: {error})", style="yellow")
    found = [f"{status.value} {counts[status.value]}" for status in ItemStatus if counts[status.value]]
    return Text(f"Videos by status (from the server): {'   '.join(found) or 'none'}")


def _stories_table(stories: list[tuple[str, str, str]]) -> Table:
    table = Table(box=None, title="Stories worth reading", title_justify="left", title_style="bold")
    for name in ("story", "video", "ended"):
        table.add_column(name, style="bold" if name == "video" else "")
    for story, video, how in stories:
        table.add_row(story, video, how)
    return table
