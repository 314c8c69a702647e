"""stagewatch: one place that says where every video is, why it failed, and what to do about it.

``pip install stagewatch`` gives the worker SDK; ``pip install 'stagewatch[server]'`` adds the server,
the dashboard and the ``stagewatch`` command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
