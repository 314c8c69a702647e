"""Child processes of a run (``run.subprocess(...)``): each starts in its own session, so that stopping
the run reaches the whole tree (ffmpeg and whatever it forked) with one signal to the process group:
SIGTERM first, SIGKILL for what is still alive after a grace period."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the SDK's dependencies

from stagewatch.sdk.diagnostics import log


class ChildProcesses:
    """The processes one run started. ``terminate()`` returns at once; the grace period is waited out
    on a daemon thread, so neither the heartbeat thread nor an exception leaving a stage is held up."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._children: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()

    def start(self, args: str | Sequence[str], popen_kwargs: dict[str, Any]) -> subprocess.Popen[Any]:
        """``subprocess.Popen(args, **popen_kwargs)`` in a new session (its own process group)."""
        popen_kwargs.setdefault("start_new_session", True)
        child: subprocess.Popen[Any] = subprocess.Popen(args, **popen_kwargs)
        with self._lock:
            self._children = [c for c in self._children if c.poll() is None] + [child]
        return child

    def terminate(self, why: str) -> threading.Thread | None:
        """SIGTERM every live child's group now; SIGKILL what is left after ``grace`` seconds, in the
        background. Returns that thread (None when nothing was alive)."""
        with self._lock:
            alive, self._children = [c for c in self._children if c.poll() is None], []
        if not alive:
            return None
        log.info("sdk.run.terminating_children pids=%s why=%s", [c.pid for c in alive], why)
        trees = {child.pid: _descendants(child.pid) for child in alive}
        for child in alive:
            _signal_group(child, signal.SIGTERM)
        reaper = threading.Thread(
            target=_reap, args=(alive, trees, self.grace), name="stagewatch-reaper", daemon=True
        )
        reaper.start()
        return reaper


def _descendants(pid: int) -> list[psutil.Process]:
    """The processes below ``pid`` now: one may have moved to another group, and the group leader may be
    gone before the grace period ends while they are not."""
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _signal_group(child: subprocess.Popen[Any], signum: int) -> None:
    """Signal the child's process group, but only while the child itself was not reaped: after that its
    pid (and group id) may belong to an unrelated process."""
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def _reap(alive: list[subprocess.Popen[Any]], trees: dict[int, list[psutil.Process]], grace: float) -> None:
    deadline = time.monotonic() + grace
    for child in alive:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("sdk.run.child_killed pid=%d: still alive %.1fs after SIGTERM", child.pid, grace)
            _signal_group(child, signal.SIGKILL)
            child.wait()
    survivors = [process for tree in trees.values() for process in tree]
    _, stubborn = psutil.wait_procs(survivors, timeout=max(0.0, deadline - time.monotonic()))
    for process in stubborn:
        with contextlib.suppress(psutil.Error):
            process.kill()  # psutil checks the process's start time, so a reused pid is left alone
