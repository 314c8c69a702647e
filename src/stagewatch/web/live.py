"""Live updates over Server-Sent Events: the server re-renders a page's live parts every few seconds
and sends those that changed, each as an event named after the element it replaces. ``static/app.js``
swaps them in. The HTML is rendered by the same templates as the page, so it is escaped the same way.

A stream ends when the browser goes away, after ``MAX_STREAM_SECONDS`` (the browser reconnects by
itself), when the viewer's session is no longer valid, or when the server is told to stop: uvicorn
waits for open responses before it shuts down, and an endless stream would hold it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any, Generic, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

Fragments = dict[str, str]
Renderer = Callable[[], Awaitable[Fragments]]
StillAllowed = Callable[[], Awaitable[bool]]
T = TypeVar("T")

INTERVAL = 2.0
# Under the interval, so every stream's next tick finds a result read since its last one.
SHARED_READ_MAX_AGE = INTERVAL / 2
MAX_STREAM_SECONDS = 120.0
RECHECK_SESSION_SECONDS = 15.0
RECONNECT_MS = 2000


class _Stopping:
    """Set when the process receives SIGTERM or SIGINT. The previous handler (uvicorn's) still runs."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            self._chain(asyncio.get_running_loop(), self._event)
        return self._event

    @staticmethod
    def _chain(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; streams then end by MAX_STREAM_SECONDS
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(event.set)
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)


_stopping = _Stopping()


class SharedRead(Generic[T]):
    """The last result of an expensive read, shared by every open live page for ``max_age`` seconds:
    ten people watching the overview cost one query per tick instead of ten (it reads every stage's
    counts and last hour: ~80 ms on SQLite at a million events). Browsers asking at once wait for the
    one read under way rather than each starting their own."""

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._lock = asyncio.Lock()
        self._value: T | None = None
        self._read_at = -math.inf

    async def get(self, read: Callable[[], T]) -> T:
        """The shared result, read again (on a worker thread) when it is older than ``max_age``."""
        async with self._lock:
            if self._value is None or time.monotonic() - self._read_at > self._max_age:
                self._value = await run_in_threadpool(read)
                self._read_at = time.monotonic()
            return self._value


def sse_event(name: str, html: str) -> str:
    data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
    return f"event: {name}\n{data}\n\n"


async def _pause(request: Request, seconds: float) -> bool:
    """Wait ``seconds``; False when the server is stopping or the browser went away."""
    stopping = _stopping.event()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    return not stopping.is_set() and not await request.is_disconnected()


async def _events(request: Request, render: Renderer, allowed: StillAllowed) -> AsyncIterator[str]:
    yield f"retry: {RECONNECT_MS}\n\n"
    sent: Fragments = {}
    started = checked = time.monotonic()
    while time.monotonic() - started < MAX_STREAM_SECONDS:
        fragments = await render()
        changed = {name: html for name, html in fragments.items() if sent.get(name) != html}
        for name, html in changed.items():
            yield sse_event(name, html)
        sent.update(changed)
        if not changed:
            yield ": idle\n\n"  # a comment: keeps proxies from closing a quiet stream
        if not await _pause(request, INTERVAL):
            return
        if time.monotonic() - checked > RECHECK_SESSION_SECONDS:
            if not await allowed():
                return
            checked = time.monotonic()


def event_stream(request: Request, render: Renderer, allowed: StillAllowed) -> StreamingResponse:
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _events(request, render, allowed), media_type="text/event-stream", headers=headers
    )
