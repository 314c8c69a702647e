"""Commands that read from (or send to) a running server: status, items, send-events."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's commands to the ``stagewatch`` group."""
