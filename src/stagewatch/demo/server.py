"""The demo's own ``stagewatch serve``: a child process on 127.0.0.1 and a SQLite file, started in its
own session (so Ctrl-C in the terminal reaches the demo, which stops it in order), its output in a log
file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """The server did not start; the message ends with the tail of its log."""


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class DemoServer:
    """A running ``stagewatch serve`` child process."""

    port: int
    db_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Return once ``/healthz`` answers; raise ``ServerError`` if the process exits or is too slow."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"the server exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            if self._healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"the server did not answer /healthz within {timeout:g}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn finishes its requests and commits), then SIGKILL if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


def start_server(port: int, db_path: Path, workdir: Path) -> DemoServer:
    """Start ``stagewatch serve`` on ``port`` with the SQLite file ``db_path``. It runs in ``workdir``
    with no ``STAGEWATCH_*`` variables, so a ``stagewatch.toml`` or settings of the user's own do not
    change the demo's pipeline."""
    command = [
        sys.executable,
        "-m",
        "stagewatch",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--db",
        str(db_path),
        "--log-level",
        "warning",
    ]
    env = {name: value for name, value in os.environ.items() if not name.startswith("STAGEWATCH_")}
    log_path = workdir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env, start_new_session=True
        )
    return DemoServer(port, db_path, log_path, process)
