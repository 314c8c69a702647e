"""The demo server's pipeline file: the ``instagram`` preset with its times scaled to the demo's speed,
so the guardrails act within a demo's minutes instead of a production hour: a runaway transcode is told
to stop after a simulated minute, a killed worker times out after a few missed heartbeats, retries back
off by simulated seconds. The publish quota is Instagram's own: 50 posts per account per 24 h."""

from __future__ import annotations

from pathlib import Path

# Simulated seconds; divided by the demo's speed (and kept above a floor) to get the server's real ones.
PROCESS_TIMEOUT = 90.0
BACKOFF = {"download": (2.0, 30.0), "enqueue": (0.5, 5.0), "process": (3.0, 30.0), "publish": (4.0, 30.0)}
QUOTA, QUOTA_WINDOW = 50, "24h"


def heartbeat_interval(speed: float) -> float:
    """Real seconds between the demo workers' heartbeats: every 5 simulated seconds, 0.5 to 5 real."""
    return min(5.0, max(0.5, 5.0 / speed))


def _real(simulated: float, speed: float, floor: float) -> str:
    return f"{max(floor, simulated / speed):.2f}s"


def demo_config(speed: float) -> str:
    """The TOML text of the demo's pipeline."""
    # Three missed heartbeats time a run out; never under two seconds, so a slow machine is not fatal.
    silent = f"{max(2.0, 3 * heartbeat_interval(speed)):.2f}s"
    stages = []
    for name, (initial, most) in BACKOFF.items():
        lines = [
            "[[pipelines.instagram.stages]]",
            f'name = "{name}"',
            f'backoff_initial = "{_real(initial, speed, 0.1)}"',
            f'backoff_max = "{_real(most, speed, 0.5)}"',
            f'heartbeat_timeout = "{silent}"',
        ]
        if name == "process":
            lines.append(f'timeout = "{_real(PROCESS_TIMEOUT, speed, 3.0)}"')
        if name == "publish":
            lines.append(
                f'rate_limits = [{{ key = "{{account}}", limit = {QUOTA}, per = "{QUOTA_WINDOW}" }}]'
            )
        stages.append("\n".join(lines))
    return '[pipelines.instagram]\npreset = "instagram"\n\n' + "\n\n".join(stages) + "\n"


def write_demo_config(workdir: Path, speed: float) -> Path:
    path = workdir / "stagewatch.toml"
    path.write_text(demo_config(speed))
    return path
