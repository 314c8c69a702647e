"""stagewatch: one place that says where every video is, why it failed, and what to do about it.

``pip install stagewatch`` gives the worker SDK; ``pip install 'stagewatch[server]'`` adds the server,
the dashboard and the ``stagewatch`` command line.

    import stagewatch

    client = stagewatch.Client()  # STAGEWATCH_URL, STAGEWATCH_TOKEN
    with client.stage("download", video_id) as run:
        run.progress(0.5)
"""

__version__ = "0.1.0"

# The SDK only: the server's modules (and their dependencies) are never imported from here.
from stagewatch.sdk import (
    Aborted,
    AsyncClient,
    Cancelled,
    Client,
    DeadLettered,
    Run,
    Skip,
    Wait,
    current_run,
)

__all__ = [
    "Aborted",
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadLettered",
    "Run",
    "Skip",
    "Wait",
    "__version__",
    "current_run",
]
