"""The pure core: models, state machines, pipelines and the projection. No I/O is imported here."""
