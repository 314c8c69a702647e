"""The CLI loads a command's module only when that command runs, and every command it lists loads."""

from __future__ import annotations

import subprocess
import sys

import click

from stagewatch.cli.main import COMMANDS, cli

# What a read command must not drag in: the server, the demo, the database layer.
HEAVY = ("fastapi", "uvicorn", "sqlalchemy", "stagewatch.demo", "stagewatch.store", "stagewatch.api")


def test_every_listed_command_loads_under_its_own_name() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert {"serve", "migrate", *COMMANDS} == set(names)
    for name in names:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name


def test_a_read_command_loads_neither_the_server_nor_the_demo_nor_the_database_layer() -> None:
    probe = (
        "import sys, click\n"
        "from stagewatch.cli.main import cli\n"
        "for name in ('status', 'items', 'summary', 'send-events', 'logs', 'cancel'):\n"
        "    cli.get_command(click.Context(cli), name)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"loaded at start-up: {loaded.stdout.strip()}"
