"""The demo's own ``stagewatch serve``: a child process on 127.0.0.1 and a SQLite file, isolated from the
user's settings, its output in a log file."""

from __future__ import annotations

from pathlib import Path

from stagewatch.server_process import ServerError, ServerProcess, free_port, launch, port_is_free

DemoServer = ServerProcess

__all__ = ["DemoServer", "ServerError", "free_port", "port_is_free", "start_server"]


def start_server(port: int, db_path: Path, workdir: Path) -> DemoServer:
    """Start ``stagewatch serve`` on ``port`` with the SQLite file ``db_path``. It runs in ``workdir``
    with no ``STAGEWATCH_*`` variables, so a ``stagewatch.toml`` or settings of the user's own do not
    change the demo's pipeline."""
    extra = ("--log-level", "warning")
    return launch(str(db_path), workdir / "server.log", port=port, extra=extra, cwd=workdir, isolated=True)
