"""How a run stops when the control plane says so. The heartbeat thread calls ``Stopper.stop(reason)``;
worker code then sees it three ways: ``run.check()`` / ``run.progress()`` raise ``Cancelled``, the
asyncio task running an ``async with`` stage is cancelled (on its own loop, thread-safely), and the
run's child processes are terminated."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from subprocess import Popen
from typing import Any

from stagewatch.sdk.children import ChildProcesses
from stagewatch.sdk.errors import Cancelled


class Stopper:
    """The stop state of one run. Once the run has finished (``close()``), a late stop is ignored: the
    work is over, and processes it left running on purpose are not touched."""

    def __init__(self, kill_grace: float) -> None:
        self.reason: str | None = None
        self.children = ChildProcesses(kill_grace)
        self._lock = threading.Lock()
        self._closed = False
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task_cancelled = False  # set on the task's loop only

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def check(self) -> None:
        """Raise ``Cancelled`` once the run was told to stop."""
        if self.reason is not None:
            raise Cancelled(self.reason)

    def stop(self, reason: str) -> bool:
        """Mark the run stopped, cancel its asyncio task and terminate its children. False when it was
        already stopped or has finished (nothing done)."""
        with self._lock:
            if self._closed or self.reason is not None:
                return False
            self.reason = reason
            loop = self._loop
        if loop is not None:
            _call_soon(loop, self._cancel_task)
        self.children.terminate(f"stop: {reason}")
        return True

    def subprocess(self, args: str | Sequence[str], popen_kwargs: dict[str, Any]) -> Popen[Any]:
        self.check()  # a stopped run starts nothing new
        return self.children.start(args, popen_kwargs)

    # --- an ``async with`` stage ------------------------------------------------------------------------

    def bind_task(self) -> None:
        """Remember the asyncio task entering the stage, so a stop can cancel it."""
        task = asyncio.current_task()
        if task is not None:
            with self._lock:
                self._task, self._loop = task, task.get_loop()

    def release_task(self, exc: BaseException | None) -> BaseException | None:
        """Forget the task (on its loop, as the stage is left) and say what leaves the stage: the
        ``CancelledError`` this stopper caused becomes ``Cancelled(reason)``, and the cancel request is
        withdrawn so the task goes on normally after the stage."""
        with self._lock:
            task, self._task, self._loop = self._task, None, None
        if task is None or not self._task_cancelled:
            return exc
        self._task_cancelled = False
        others = task.uncancel()  # other cancel requests than ours still stand
        if isinstance(exc, asyncio.CancelledError) and others == 0:
            return Cancelled(self.reason or "stopped")
        return exc

    def _cancel_task(self) -> None:
        # On the task's loop: the stage may have been left since the stop was scheduled.
        task = self._task
        if task is not None and not task.done() and not self._task_cancelled:
            self._task_cancelled = True
            task.cancel(f"stagewatch: {self.reason}")

    # --- the end --------------------------------------------------------------------------------------

    def close(self, exc: BaseException | None) -> None:
        """The stage is over: later stops are ignored. When it failed, its children are terminated."""
        with self._lock:
            self._closed = True
        if exc is not None:
            self.children.terminate(f"the stage ended with {type(exc).__name__}")


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: there is no task left to cancel
        loop.call_soon_threadsafe(callback)
