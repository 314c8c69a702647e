"""``stagewatch deps``: each dependency's circuit, read from a running server (``GET /v1/dependencies``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import click
from rich.text import Text

from stagewatch.cli import render
from stagewatch.cli.client import Json, StagewatchClient
from stagewatch.cli.reads import JSON_HELP, connect, print_json, reports_errors, server_options

STATE_STYLE = {"up": "green", "down": "bold red", "half_open": "yellow", "unknown": "dim"}
STATE_WORD = {"up": "up", "down": "DOWN", "half_open": "half-open", "unknown": "unknown"}
COLUMNS = (
    render.Column("dependency"),
    render.Column("kind", drop=3),
    render.Column("state"),
    render.Column("since", "right"),
    render.Column("failures", "right", drop=2),
    render.Column("checked", "right", drop=1),
    render.Column("needed by", wrap_at=12, drop=4),
    render.Column("message", wrap_at=16, one_line=True),
)


@click.command("deps", short_help="Dependency health: each circuit's state, since when, and why.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@server_options
@reports_errors
def deps(as_json: bool, url: str | None, token: str | None) -> None:
    """Each dependency the server knows (declared under [dependencies], or named by a stage's depends_on)
    with its circuit: up, DOWN (work that needs it waits), half-open (a probe decides) or unknown.

    \b
    Examples:
      stagewatch deps            the circuits, as a table
      stagewatch deps --json     the server's JSON, for jq
    """
    with connect(url, token) as client:
        document = fetch_dependencies(client)
    if as_json:
        print_json(document)
        return
    render.show(dependencies_table(document.get("dependencies") or [], datetime.now(UTC)))


def fetch_dependencies(client: StagewatchClient) -> Json:
    """``GET /v1/dependencies``, with the client's error handling (a ``ClientError`` on failure)."""
    return client.get_json("/v1/dependencies")


def dependencies_table(dependencies: Sequence[Json], now: datetime) -> render.FittedTable | Text:
    """One row per dependency; a line saying so when there are none."""
    if not dependencies:
        return Text("no dependencies: declare them under [dependencies] in stagewatch.toml", style="dim")
    return render.FittedTable(COLUMNS, [_cells(dependency, now) for dependency in dependencies])


def _cells(dependency: Json, now: datetime) -> tuple[Text, ...]:
    state = str(dependency.get("state") or "unknown")
    failures = f"{dependency.get('failures', 0)}/{dependency.get('failure_threshold', '?')}"
    return (
        Text(str(dependency["name"]), style="bold"),
        Text(str(dependency.get("kind") or "")),
        Text(STATE_WORD.get(state, state), style=STATE_STYLE.get(state, "")),
        Text(render.ago(render.parse_time(dependency.get("since")), now)),
        Text(failures),
        Text(render.ago(render.parse_time(dependency.get("checked_at")), now)),
        Text(", ".join(dependency.get("needed_by") or []) or render.NONE),
        Text(str(dependency.get("message") or "")),
    )
