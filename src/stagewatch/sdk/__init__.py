"""The worker SDK: report every stage run of every video to stagewatch in a few lines.

It imports with only ``httpx`` and ``psutil`` installed; nothing here imports the server.
"""

from stagewatch.sdk.aio import AsyncClient
from stagewatch.sdk.client import Client
from stagewatch.sdk.errors import Aborted, Cancelled, DeadLettered, RunInterrupted, Skip, Wait
from stagewatch.sdk.run import Run, current_run
from stagewatch.sdk.stats import Stats

__all__ = [
    "Aborted",
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadLettered",
    "Run",
    "RunInterrupted",
    "Skip",
    "Stats",
    "Wait",
    "current_run",
]
