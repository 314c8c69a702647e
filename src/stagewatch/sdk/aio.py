"""``AsyncClient``: the same SDK for asyncio code.

    async with stagewatch.AsyncClient() as client:
        async with client.stage("process", video_id) as run:
            ...

Queuing never blocks the event loop: records go to the same thread-based exporter as ``Client``'s, and
only ``flush()`` and ``aclose()``, which wait for the network, are coroutines (run in a worker thread).
Each asyncio task sees its own ``current_run()``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from stagewatch.sdk.core import BaseClient


class AsyncClient(BaseClient):
    """The SDK's entry point for asyncio code; the arguments are ``Client``'s. ``stage()`` is used with
    ``async with``; ``item_created``, ``enqueued`` and ``emit_log`` only queue, so they are plain calls."""

    async def flush(self, timeout: float = 5.0) -> bool:
        """Send everything queued so far and try the spool now, waiting at most ``timeout`` seconds.
        True when all of it reached the server."""
        return await asyncio.to_thread(self._flush, timeout)

    async def aclose(self, timeout: float = 5.0) -> bool:
        """Flush, then stop the background threads. Called for you at interpreter exit."""
        return await asyncio.to_thread(self._close, timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
