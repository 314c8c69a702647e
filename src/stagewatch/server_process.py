"""``stagewatch serve`` as a child process on loopback: started, waited for until ``/healthz`` answers,
stopped in order. The demo runs its server this way, and so do the tests and benchmarks that need a
real one. Only the standard library and httpx are used, so the SDK install can import it too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
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
class ServerProcess:
    """A running ``stagewatch serve`` child process."""

    port: int
    database_url: str
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

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


def launch(
    database_url: str,
    log_path: Path,
    *,
    port: int | None = None,
    extra: Sequence[str] = (),
    cwd: Path | None = None,
    isolated: bool = False,
    env_overrides: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start ``stagewatch serve`` on ``port`` (default: a free one) without waiting for it.

    ``isolated`` runs it with no ``STAGEWATCH_*`` variables and in its own session, so the user's own
    settings do not change it and Ctrl-C in the terminal reaches the parent, which stops it in order.
    """
    port = port or free_port()
    command = [sys.executable, "-m", "stagewatch", "serve", "--host", HOST, "--port", str(port)]
    command += ["--db", database_url, *extra]
    env = None
    if isolated:
        env = {name: value for name, value in os.environ.items() if not name.startswith("STAGEWATCH_")}
    if env_overrides:
        env = {**(env if env is not None else os.environ), **env_overrides}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=isolated
        )
    return ServerProcess(port, database_url, log_path, process)
