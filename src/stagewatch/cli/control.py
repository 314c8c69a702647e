"""Operator commands: cancel videos, resume one from a stage, stop a run, and work the dead-letter queue.

Each talks to the server (scope ``operate``), which audits it under the token's name. Bulk forms take the
same filters as ``stagewatch items`` and show the count first: ``--dry-run`` stops there, otherwise the
command asks for confirmation unless ``--yes``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from stagewatch.cli.client import Json, StagewatchClient
from stagewatch.cli.reads import connect, print_json, reports_errors, server_options, split_statuses

REASON_HELP = "Why: recorded in the audit trail with your token's name."


def _path(template: str, value: str) -> str:
    return template.format(quote(value, safe=""))


def _confirm_bulk(
    client: StagewatchClient, path: str, body: Json, what: str, dry_run: bool, yes: bool
) -> Json | None:
    """Ask the server for the count; stop there on ``--dry-run``, ask before acting unless ``--yes``."""
    counted = client.post_json(path, {**body, "dry_run": True})
    count = int(counted.get("count", 0))
    if dry_run:
        click.echo(f"{count} {what} match (dry run: nothing changed)")
        return None
    if count == 0:
        click.echo(f"no {what} match: nothing to do")
        return None
    if not yes:
        click.confirm(f"{count} {what} match. Go ahead?", abort=True)
    return client.post_json(path, body)


# --- cancel --------------------------------------------------------------------------------------------


@click.command("cancel", short_help="Cancel videos: queued work is refused, running work told to stop.")
@click.argument("item_ids", nargs=-1, metavar="[ITEM_ID]...")
@click.option("--reason", required=True, help=REASON_HELP)
@click.option(
    "--status", "statuses", multiple=True, callback=split_statuses, help="Bulk: items in this status."
)
@click.option("--stage", default=None, help="Bulk: items at this stage.")
@click.option("--account", default=None, help="Bulk: items of this account.")
@click.option("--scenario", default=None, help="Bulk: items of this scenario.")
@click.option("--prefix", default=None, help="Bulk: items whose id starts with this.")
@click.option("--dry-run", is_flag=True, help="Bulk: only count the items that match.")
@click.option("--yes", "-y", is_flag=True, help="Bulk: do not ask for confirmation.")
@server_options
@reports_errors
def cancel(
    item_ids: tuple[str, ...], reason: str, statuses: list[str], stage: str | None, account: str | None,
    scenario: str | None, prefix: str | None, dry_run: bool, yes: bool, url: str | None, token: str | None,
) -> None:  # fmt: skip
    """Cancel ITEM_ID... or every item matching the filters. A running stage receives stop at its next
    heartbeat; later begins answer abort. `stagewatch resume ITEM --from-stage S` undoes it."""
    bulk = {
        "status": statuses or None,
        "stage": stage,
        "account": account,
        "scenario": scenario,
        "prefix": prefix,
    }
    bulk = {name: value for name, value in bulk.items() if value}
    if bool(item_ids) == bool(bulk):
        raise click.UsageError("give item ids, or filters such as --status/--stage, but not both")
    with connect(url, token) as client:
        if item_ids:
            for item_id in item_ids:
                client.post_json(_path("/v1/items/{}/cancel", item_id), {"reason": reason})
                click.echo(f"cancelled {item_id}")
            return
        done = _confirm_bulk(
            client, "/v1/items/cancel", {"filter": bulk, "reason": reason}, "items", dry_run, yes
        )
        if done is not None:
            click.echo(f"cancelled {done['count']} items")


# --- resume and stop -----------------------------------------------------------------------------------


@click.command("resume", short_help="Resume a video from a stage: lift a cancel, re-arm, re-deliver.")
@click.argument("item_id")
@click.option(
    "--from-stage", "from_stage", required=True, help="The stage to run again (and every one after)."
)
@click.option("--reason", default=None, help=REASON_HELP)
@click.option("--no-deliver", is_flag=True, help="Re-arm only; do not re-deliver the stage's last payload.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@server_options
@reports_errors
def resume(
    item_id: str, from_stage: str, reason: str | None, no_deliver: bool, as_json: bool, url: str | None,
    token: str | None,
) -> None:  # fmt: skip
    """Make ITEM_ID runnable again from FROM_STAGE: attempts count from 1, open dead letters of those
    stages count as replayed, and the stage's last payload is re-delivered through its replay target."""
    body = {"from_stage": from_stage, "reason": reason, "deliver": not no_deliver}
    with connect(url, token) as client:
        answer = client.post_json(_path("/v1/items/{}/resume", item_id), body)
    if as_json:
        print_json(answer)
        return
    click.echo(f"resumed {item_id} from {from_stage}{_delivery_note(answer.get('delivery'))}")


@click.command("stop", short_help="Stop one running run (a runaway) at its next heartbeat.")
@click.argument("run_id")
@click.option("--reason", required=True, help=REASON_HELP)
@server_options
@reports_errors
def stop(run_id: str, reason: str, url: str | None, token: str | None) -> None:
    """Tell RUN_ID to stop: its worker raises Cancelled, its asyncio task is cancelled and its child
    processes are killed, within one heartbeat interval."""
    with connect(url, token) as client:
        answer = client.post_json(_path("/v1/runs/{}/stop", run_id), {"reason": reason})
    click.echo(f"stop requested for run {run_id} of {answer['item_id']}")


def _delivery_note(delivery: Any) -> str:
    if not isinstance(delivery, dict):
        return ""
    return (
        f" (delivered: {delivery['detail']})"
        if delivery.get("ok")
        else f" (not delivered: {delivery['detail']})"
    )


# --- the dead-letter queue -----------------------------------------------------------------------------


@click.group("dlq", short_help="The dead-letter queue: list, replay or discard what ran out of attempts.")
def dlq() -> None:
    """Videos whose attempts ran out, or that failed with a permanent error, wait here with their payload,
    last error and attempts. Replay re-arms them and re-delivers the payload; discard gives up."""


@dlq.command("list", short_help="Dead letters, newest first.")
@click.option("--status", default="open", type=click.Choice(["open", "replayed", "discarded", "all"]))
@click.option("--stage", default=None, help="Only this stage.")
@click.option("--item", "item_id", default=None, help="Only this video.")
@click.option("--since", default=None, help="Only those created after this time (epoch seconds or ISO 8601).")
@click.option("--limit", default=100, type=click.IntRange(1, 1000), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_options
@reports_errors
def dlq_list(
    status: str, stage: str | None, item_id: str | None, since: str | None, limit: int, as_json: bool,
    url: str | None, token: str | None,
) -> None:  # fmt: skip
    params = {"status": status, "stage": stage, "item_id": item_id, "since": since, "limit": limit}
    with connect(url, token) as client:
        page = client.get_json("/v1/dlq", params)
    letters = page["dead_letters"]
    if as_json:
        print_json(letters)
        return
    if not letters:
        click.echo("the dead-letter queue is empty" if status == "open" else "no dead letters match")
        return
    for letter in letters:
        error = letter.get("error") or {}
        cause = f"{error.get('type', '')}: {error.get('message', '')}"
        click.echo(
            f"#{letter['id']}  {letter['created_at']}  {letter['item_id']}  {letter['stage']}  "
            f"attempts={letter['attempts']}  {letter['status']}  {cause}"
        )


def _letter_body(ids: tuple[int, ...], stage: str | None, item_id: str | None, every: bool) -> Json:
    if ids and (stage or item_id or every):
        raise click.UsageError("give dead-letter ids, or --stage/--item/--all, not both")
    if ids:
        return {"ids": list(ids)}
    if not (stage or item_id or every):
        raise click.UsageError("give dead-letter ids, or --stage/--item, or --all")
    return {"filter": {name: value for name, value in {"stage": stage, "item_id": item_id}.items() if value}}


def _letter_action(action: str):  # type: ignore[no-untyped-def]
    @click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
    @click.option("--stage", default=None, help="Every open dead letter of this stage.")
    @click.option("--item", "item_id", default=None, help="Every open dead letter of this video.")
    @click.option("--all", "every", is_flag=True, help="Every open dead letter.")
    @click.option("--reason", default=None, help=REASON_HELP)
    @click.option("--dry-run", is_flag=True, help="Only count what would be affected.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @server_options
    @reports_errors
    def command(
        ids: tuple[int, ...], stage: str | None, item_id: str | None, every: bool, reason: str | None,
        dry_run: bool, yes: bool, url: str | None, token: str | None,
    ) -> None:  # fmt: skip
        body = {**_letter_body(ids, stage, item_id, every), "reason": reason}
        with connect(url, token) as client:
            done = _confirm_bulk(client, f"/v1/dlq/{action}", body, "dead letters", dry_run, yes or bool(ids))
        if done is None:
            return
        click.echo(f"{action}ed {done['count']} dead letters")
        for entry in done.get("replayed", []):
            click.echo(f"  {entry['item_id']} {entry['stage']}{_delivery_note(entry.get('delivery'))}")

    return command


dlq.command("replay", short_help="Re-arm dead letters and re-deliver their payloads.")(
    _letter_action("replay")
)
dlq.command("discard", short_help="Give up on dead letters for good (needs --reason).")(
    _letter_action("discard")
)


# --- stages --------------------------------------------------------------------------------------------


@click.command("pause", short_help="Pause a stage: every new run of it waits (running work goes on).")
@click.argument("stage")
@click.option("--reason", required=True, help=REASON_HELP)
@click.option("--pipeline", default=None, help="The pipeline. [default: the server's default]")
@server_options
@reports_errors
def pause(stage: str, reason: str, pipeline: str | None, url: str | None, token: str | None) -> None:
    """Pause STAGE: `begin` answers wait ("stage publish paused by alice: ...") until `stagewatch unpause`."""
    with connect(url, token) as client:
        client.post_json(_path("/v1/stages/{}/pause", stage), {"reason": reason, "pipeline": pipeline})
    click.echo(f"paused {stage}: new runs wait until `stagewatch unpause {stage}`")


@click.command("unpause", short_help="Let new runs of a paused stage begin again.")
@click.argument("stage")
@click.option("--reason", default="", help=REASON_HELP)
@click.option("--pipeline", default=None, help="The pipeline. [default: the server's default]")
@server_options
@reports_errors
def unpause(stage: str, reason: str, pipeline: str | None, url: str | None, token: str | None) -> None:
    with connect(url, token) as client:
        client.post_json(_path("/v1/stages/{}/unpause", stage), {"reason": reason, "pipeline": pipeline})
    click.echo(f"unpaused {stage}")


@click.command("limit", short_help="Cap a stage's runs at once (admin), or lift the cap.")
@click.argument("stage")
@click.option("--max-running", type=click.IntRange(min=0), default=None, help="At most this many at once.")
@click.option("--clear", is_flag=True, help="Lift the cap.")
@click.option("--reason", default="", help=REASON_HELP)
@click.option("--pipeline", default=None, help="The pipeline. [default: the server's default]")
@server_options
@reports_errors
def limit(
    stage: str, max_running: int | None, clear: bool, reason: str, pipeline: str | None, url: str | None,
    token: str | None,
) -> None:  # fmt: skip
    """Cap STAGE at --max-running runs at once (on top of its configured limits), or --clear the cap."""
    if (max_running is None) == (not clear):
        raise click.UsageError("give --max-running N or --clear")
    body = {"max_running": None if clear else max_running, "reason": reason, "pipeline": pipeline}
    with connect(url, token) as client:
        client.put_json(_path("/v1/stages/{}/limit", stage), body)
    click.echo(f"{stage}: cap lifted" if clear else f"{stage}: at most {max_running} runs at once")
