"""The media side of the simulated pipeline: fetching the source file and running ffmpeg.

Errors are the ones real code meets: ``httpx.HTTPStatusError`` for a 404, ``httpx.ReadTimeout`` for a
slow CDN, and an ``FfmpegError`` carrying the tail of the stderr of a real ffmpeg-like child process
that exited non-zero.
"""

from __future__ import annotations

import subprocess
import sys
from typing import NoReturn

import httpx

# What ffmpeg prints for a truncated MP4 (no moov atom), written by a real child process.
_FFMPEG_SCRIPT = """
import sys
sys.stderr.write(
    "ffmpeg version 6.1.1 Copyright (c) 2000-2023 the FFmpeg developers\\n"
    "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d5c8e3a2c0] moov atom not found\\n"
    f"{sys.argv[1]}: Invalid data found when processing input\\n"
)
sys.exit(1)
"""


class FfmpegError(RuntimeError):
    """ffmpeg exited non-zero; the message ends with the last lines of its stderr."""

    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        tail = " | ".join(line for line in stderr.strip().splitlines()[-2:])
        super().__init__(f"ffmpeg exited with status {returncode}: {tail}")


def fail_not_found(url: str) -> NoReturn:
    """Raise what ``response.raise_for_status()`` raises when the CDN answers 404."""
    request = httpx.Request("GET", url)
    response = httpx.Response(404, request=request)
    raise httpx.HTTPStatusError(
        f"Client error '404 Not Found' for url '{url}'", request=request, response=response
    )


def fail_read_timeout(url: str, seconds: float) -> NoReturn:
    """Raise what httpx raises when the CDN stops sending mid-file."""
    request = httpx.Request("GET", url)
    raise httpx.ReadTimeout(f"timed out reading {url}: no data for {seconds:g} s", request=request)


def run_broken_ffmpeg(input_path: str) -> None:
    """Run a real child process that behaves like ffmpeg on a corrupt file: it fails, and the
    ``FfmpegError`` raised here carries its stderr."""
    command = [sys.executable, "-c", _FFMPEG_SCRIPT, input_path]
    try:
        subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=30, start_new_session=True
        )
    except subprocess.CalledProcessError as exc:
        raise FfmpegError(exc.returncode, exc.stderr or "") from exc
