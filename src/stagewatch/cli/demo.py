"""``stagewatch demo``: the first thing to run. A simulated video pipeline reports to a fresh server
through the SDK, with realistic failures, while a live table shows it."""

from __future__ import annotations

from pathlib import Path

import click

from stagewatch.cli.render import make_console
from stagewatch.demo.runner import DemoOptions, run_demo
from stagewatch.demo.server import ServerError


@click.command("demo", short_help="Watch a simulated video pipeline report to stagewatch, live.")
@click.option(
    "--videos",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    metavar="N",
    help="How many videos to submit.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.05, max=100),
    default=2.0,
    show_default=True,
    metavar="R",
    help="Videos submitted per second.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    metavar="S",
    help="Seed of the simulation: the same seed gives the same videos and failures. "
    "[default: random, printed]",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Stop after this many seconds, even if videos are still flowing.",
)
@click.option(
    "--exit-when-done",
    is_flag=True,
    help="Exit once every video has finished, without keeping the server running.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    metavar="P",
    help="Port of the demo's server on 127.0.0.1; if it is busy, a free one is used (and printed).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="SQLite file for the demo's server. [default: a fresh file in a temporary directory]",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.1, max=100),
    default=1.0,
    show_default=True,
    metavar="F",
    help="Time compression of the simulated work: 10 makes every step ten times faster.",
)
@click.option(
    "--keep-serving/--no-keep-serving",
    default=None,
    help="After the demo, keep the server running until Ctrl-C, to look around. "
    "[default: yes on a terminal, unless --exit-when-done]",
)
def demo(
    videos: int,
    rate: float,
    seed: int | None,
    duration: float | None,
    exit_when_done: bool,
    port: int,
    db: Path | None,
    speed: float,
    keep_serving: bool | None,
) -> None:
    """Watch a simulated Instagram video pipeline report to stagewatch, live.

    \b
    Starts `stagewatch serve` on 127.0.0.1 with a fresh SQLite file, then pushes a stream of videos
    from five accounts (reels, stories, feed) through webhook → download → Pub/Sub → Cloud Run →
    Instagram. Worker threads, and one real child process, report every run through the stagewatch
    SDK, with the failures real pipelines meet: a 404 and a timeout at download, an ffmpeg crash, a
    memory-hungry transcode, a run that never ends, a worker killed mid-run, Instagram's rate limit,
    media containers in ERROR and EXPIRED, and a webhook delivered twice.

    \b
    A typical video takes 10-20 seconds. When the demo stops (every video finished, --duration, or
    Ctrl-C), it prints a video id for each of these stories; read one with `stagewatch status ID`.

    \b
    Examples:
      stagewatch demo                                   the full demo, then keep the server running
      stagewatch demo --videos 20 --speed 5 --exit-when-done
      stagewatch demo --seed 7 --db demo.db             the same story every time, kept in demo.db
    """
    options = DemoOptions(videos, rate, seed, duration, exit_when_done, port, db, speed, keep_serving)
    try:
        run_demo(options, make_console())
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    except ServerError as error:
        click.echo(f"error: the demo's server did not start: {error}", err=True)
        raise click.exceptions.Exit(1) from None
