"""The disk spool: where records wait while the server does not answer, so an outage loses nothing.

A spool is a directory of append-only JSONL segment files, one batch per line (the JSON array that is
POSTed as it is, so replay costs no JSON work), named
``<channel>-<time_ns>-<pid>-<seq>.jsonl`` so that names sort oldest first and processes never share a
file. A process holds an ``fcntl`` lock on the segment it is writing; a segment nobody holds is sealed
(or its writer died) and may be replayed by any process sharing the directory. Replay takes the
directory's ``.replay.lock`` so that only one process replays at a time, re-sends a segment's records
with their original ids (the server drops duplicates), and deletes the segment only after the server
has answered every batch of it. A crash mid-write leaves a torn last line, which replay skips with a
warning. Over the size cap, whole segments are dropped, oldest first, and counted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from stagewatch.sdk.diagnostics import log, warn_throttled
from stagewatch.sdk.payloads import Record

if sys.platform != "win32":
    import fcntl

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024
SUFFIX = ".jsonl"
REPLAY_LOCK = ".replay.lock"


def default_spool_dir(url: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$STAGEWATCH_SPOOL_DIR``, else ``~/.cache/stagewatch/spool/<hash of the server URL>`` (one
    directory per server, so a record is never replayed to a server it was not meant for)."""
    env = os.environ if environ is None else environ
    if env.get("STAGEWATCH_SPOOL_DIR"):
        return Path(env["STAGEWATCH_SPOOL_DIR"]).expanduser()
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return cache / "stagewatch" / "spool" / digest


def _try_lock(file: IO[bytes]) -> bool:
    if sys.platform == "win32":
        return True
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class Segment:
    """A sealed segment claimed for replay: this process holds its lock until ``release``."""

    def __init__(self, path: Path, file: IO[bytes]) -> None:
        self.path = path
        self._file = file
        self.deleted = False

    @classmethod
    def claim(cls, path: Path) -> Segment | None:
        """The segment at ``path`` if no live writer or other replayer holds it."""
        try:
            file = path.open("rb")
        except FileNotFoundError:
            return None
        if not _try_lock(file) or not _same_file(file, path):
            file.close()
            return None
        return cls(path, file)

    def batches(self) -> list[bytes]:
        """Its batches in order, each the JSON array to POST; a torn last line (a crash mid-write) is
        skipped with a warning."""
        lines = self._file.read().split(b"\n")
        if lines.pop():
            log.warning("sdk.spool.torn_line path=%s: skipped an incomplete last batch", self.path)
        return [line for line in lines if line.strip()]

    def records(self) -> list[Record]:
        """Its records in order, parsed; a damaged line is skipped with a warning."""
        return [
            record for n, line in enumerate(self.batches(), 1) for record in parse_batch(line, self.path, n)
        ]

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.deleted = True
        self.release()

    def release(self) -> None:
        self._file.close()


def _same_file(file: IO[bytes], path: Path) -> bool:
    # Another replayer may have deleted it between our listing and our lock.
    try:
        return os.fstat(file.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def parse_batch(line: bytes, path: Path | None = None, number: int = 0) -> list[Record]:
    """The records of one spooled batch; none if the line is damaged (logged)."""
    try:
        batch = json.loads(line)
    except ValueError:
        log.warning("sdk.spool.bad_line path=%s line=%d: skipped a damaged batch", path, number)
        return []
    return [record for record in batch if isinstance(record, dict)] if isinstance(batch, list) else []


class _Writer:
    """The segment this process appends to for one channel; holds its lock until sealed."""

    def __init__(self, path: Path, file: IO[bytes]) -> None:
        self.path = path
        self.file = file
        self.size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.file.write(view) or 0
            view = view[written:]
        self.size += len(data)


class Spool:
    """A spool directory shared safely by threads of one process (a lock) and by several processes
    (``fcntl`` locks on files)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(1, max_bytes // 8))
        self.dropped = 0
        self.lost: set[Path] = set()  # segments dropped over the size cap: their records never arrive
        self.size_bytes = 0
        self._last: dict[str, Path] = {}
        self._writers: dict[str, _Writer] = {}
        self._backlog: dict[str, bool] = {}
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self._rescan()

    def has_backlog(self, channel: str) -> bool:
        """Whether records of ``channel`` wait on disk (new ones must then queue behind them)."""
        return self._backlog.get(channel, False)

    def append(self, channel: str, body: bytes) -> Path | None:
        """Write one batch (its JSON array, as sent) at the end of the spool. Returns the segment it is
        in, or None if the disk refused (it is then lost)."""
        data = body + b"\n"
        with self._lock:
            try:
                writer = self._writer(channel)
                writer.write(data)
            except OSError as exc:
                warn_throttled("spool.write", "sdk.spool.write_failed dir=%s error=%s", self.directory, exc)
                self._seal(channel)
                return None
            self.size_bytes += len(data)
            self._backlog[channel] = True
            self._last[channel] = writer.path
            if self.size_bytes > self.max_bytes:
                self._enforce_cap()
            return writer.path

    def last_segment(self, channel: str) -> Path | None:
        """The segment this process last wrote for ``channel`` (it may be replayed and gone by now)."""
        return self._last.get(channel)

    @contextmanager
    def replay(self, channel: str) -> Iterator[list[Segment] | None]:
        """The replayable segments of ``channel``, oldest first, claimed for the block; None when
        another process is replaying. Segments not deleted in the block stay for the next replay."""
        with self._replay_lock() as locked:
            if not locked:
                yield None
                return
            with self._lock:  # not held while the caller sends: other threads may append meanwhile
                self._seal(channel)
                segments = [s for path in self._paths(channel) if (s := Segment.claim(path))]
            try:
                yield segments
            finally:
                with self._lock:
                    for segment in segments:
                        segment.release()
                    left = any(not s.deleted for s in segments) or channel in self._writers
                    self._backlog[channel] = left
                    self._rescan_size()

    def close(self) -> None:
        """Seal the segments this process writes, so any process may replay them."""
        with self._lock:
            for channel in list(self._writers):
                self._seal(channel)

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's open segments (the parent still writes them)."""
        self._lock = threading.RLock()
        for writer in self._writers.values():
            writer.file.close()
        self._writers.clear()

    # --- internals ---------------------------------------------------------------------------------

    def _writer(self, channel: str) -> _Writer:
        writer = self._writers.get(channel)
        if writer is not None and writer.size < self.segment_bytes:
            return writer
        self._seal(channel)
        writer = self._writers[channel] = self._new_writer(channel)
        return writer

    def _new_writer(self, channel: str) -> _Writer:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{channel}-{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}"
        temporary = self.directory / f"{name}.tmp"
        file = temporary.open("xb", buffering=0)
        _try_lock(file)  # a new file: nobody else can hold it; locked before others can see its name
        final = temporary.with_suffix(SUFFIX)
        os.rename(temporary, final)
        return _Writer(final, file)

    def _seal(self, channel: str) -> None:
        writer = self._writers.pop(channel, None)
        if writer is not None:
            writer.file.close()

    def _paths(self, channel: str | None = None) -> list[Path]:
        try:
            names = sorted(os.listdir(self.directory), key=_age_key)
        except OSError:  # not there yet, or not a directory: nothing to replay
            return []
        prefix = f"{channel}-" if channel else ""
        return [self.directory / n for n in names if n.endswith(SUFFIX) and n.startswith(prefix)]

    def _rescan(self) -> None:
        for path in self._paths():
            self._backlog[path.name.split("-", 1)[0]] = True
        self._rescan_size()

    def _rescan_size(self) -> None:
        total = 0
        for path in self._paths():
            with suppress(FileNotFoundError):
                total += path.stat().st_size
        self.size_bytes = total

    def _enforce_cap(self) -> None:
        for path in self._paths():
            if self.size_bytes <= self.max_bytes:
                break
            self._drop_segment(path)
        self._rescan_size()

    def _drop_segment(self, path: Path) -> None:
        for channel, writer in list(self._writers.items()):
            if writer.path == path:
                self._seal(channel)
        segment = Segment.claim(path)
        if segment is None:
            return
        lost = len(segment.records())  # parsed only here: dropping is rare
        size = path.stat().st_size
        segment.delete()
        self.lost.add(path)
        self.dropped += lost
        self.size_bytes -= size
        warn_throttled(
            "spool.cap",
            "sdk.spool.over_cap dir=%s cap_bytes=%d: dropped the oldest segment (%d records)",
            self.directory,
            self.max_bytes,
            lost,
        )

    @contextmanager
    def _replay_lock(self) -> Iterator[bool]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            file = (self.directory / REPLAY_LOCK).open("ab")
        except OSError as exc:
            warn_throttled("spool.lock", "sdk.spool.lock_failed dir=%s error=%s", self.directory, exc)
            yield False
            return
        with file:
            yield _try_lock(file)


def _age_key(name: str) -> tuple[str, str]:
    # <channel>-<time_ns>-<pid>-<seq>: by time first, whatever the channel.
    parts = name.split("-", 1)
    return (parts[1] if len(parts) > 1 else name, name)
