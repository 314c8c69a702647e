"""``stagewatch demo``: a simulated Instagram video pipeline that reports to a fresh stagewatch server
through the worker SDK, with realistic failures, so that the first thing a new user runs shows every
stage, every kind of trouble, and the story of each video.

    runner     start the server, the pools and the producer; show it live; stop cleanly
    server     the ``stagewatch serve`` child process
    world      videos, simulated time, queues and the ledger of how each video ended
    faults     the seeded fault plan
    pipeline   the shared state: four services (one SDK client each), queues, Pub/Sub
    workers    one function per stage worker; cloudrun: the push endpoint and the dying instance
    retries    attempts of a stage with backoff; pools: the worker threads
    display    the live table; report: the banner and the final summary
"""
