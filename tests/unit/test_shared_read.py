"""The dashboard's live streams share one expensive read per tick (``web.live.SharedRead``)."""

from __future__ import annotations

import asyncio
import threading
import time

from stagewatch.web.live import SharedRead


def test_streams_asking_together_share_one_read_until_it_is_old() -> None:
    reads = 0
    lock = threading.Lock()

    def read() -> int:
        nonlocal reads
        time.sleep(0.05)  # a slow query: the other streams arrive while it runs
        with lock:
            reads += 1
            return reads

    async def scenario() -> tuple[list[int], int]:
        shared: SharedRead[int] = SharedRead(max_age=0.3)
        together = await asyncio.gather(*(shared.get(read) for _ in range(10)))
        await asyncio.sleep(0.4)
        return together, await shared.get(read)

    together, later = asyncio.run(scenario())
    assert together == [1] * 10, "ten streams at once must share the first read"
    assert later == 2, "a result older than max_age is read again"
