"""The web dashboard: server-rendered pages (Jinja2), live updates over Server-Sent Events, and forms
that call the same operator services as the API. Every asset ships in this package.

``mount_dashboard(app)`` adds it to the server's app; ``stagewatch serve`` serves it at ``/``.
"""

from __future__ import annotations

from stagewatch.web.mount import mount_dashboard

__all__ = ["mount_dashboard"]
