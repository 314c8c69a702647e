"""The demo's own ``stagewatch serve``: a child process on 127.0.0.1 and a SQLite file, isolated from the
user's settings, its output in a log file, with auth on and one admin token made for the demo."""

from __future__ import annotations

from pathlib import Path

from stagewatch.demo.config import write_demo_config
from stagewatch.server_process import ServerError, ServerProcess, free_port, launch, port_is_free
from stagewatch.service.auth import create_token
from stagewatch.store.audit import Actor
from stagewatch.store.engine import open_database
from stagewatch.store.migrate import upgrade

DemoServer = ServerProcess
TOKEN_NAME = "demo-admin"
# The watchdog sweeps often, so a killed worker's run times out within a second of its lease expiring.
WATCHDOG_INTERVAL = "0.5"

__all__ = ["DemoServer", "ServerError", "demo_token", "free_port", "port_is_free", "start_server"]


def demo_token(db_path: Path) -> str:
    """A new admin token in the demo's database (migrated first), for its workers and for the user.
    A database reused from an earlier demo gets another one, named after how many exist."""
    db = open_database(f"sqlite:///{db_path}")
    try:
        upgrade(db)
        for number in range(1, 1000):
            name = TOKEN_NAME if number == 1 else f"{TOKEN_NAME}-{number}"
            try:
                return create_token(db, name, ["admin"], Actor("stagewatch demo")).token
            except Exception as error:  # the name is taken: a database reused from an earlier demo
                if "exists already" not in str(error):
                    raise
        raise RuntimeError("too many demo tokens in this database")
    finally:
        db.dispose()


def start_server(port: int, db_path: Path, workdir: Path, speed: float) -> DemoServer:
    """Start ``stagewatch serve`` on ``port`` with the SQLite file ``db_path`` and the demo's pipeline
    file (see ``demo.config``). It runs in ``workdir`` with no ``STAGEWATCH_*`` variables of the user's,
    so a ``stagewatch.toml`` or settings of their own do not change the demo."""
    config = write_demo_config(workdir, speed)
    extra = ("--log-level", "warning", "--config", str(config), "--auth")
    return launch(
        str(db_path), workdir / "server.log", port=port, extra=extra, cwd=workdir, isolated=True,
        env_overrides={"STAGEWATCH_WATCHDOG_INTERVAL": WATCHDOG_INTERVAL},
    )  # fmt: skip
