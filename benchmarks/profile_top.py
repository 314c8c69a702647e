"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): top functions by inclusive and self
share of samples, and a breakdown by stagewatch phase.

    python benchmarks/profile_top.py PROFILE.txt [--top 30] [--focus stagewatch]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# A frame in py-spy's raw output: "function (path/to/file.py:line)".
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Where a stack's time belongs, checked from the innermost stagewatch frame outwards (first match wins).
PHASES = (
    ("ingest: JSON parse (orjson.loads)", ("_parse_json", "parse_json")),
    ("ingest: validation (validate_batch / pydantic)", ("validate_batch",)),
    ("ingest: event_values + model_dump_json", ("event_values",)),
    ("ingest: insert events", ("insert_new_events",)),
    ("ingest: lock_items (load items)", ("lock_items",)),
    ("ingest: load_runs", ("load_runs",)),
    ("ingest: upsert_runs", ("upsert_runs",)),
    ("ingest: upsert_items", ("upsert_items",)),
    ("ingest: add_stage_counts", ("add_stage_counts",)),
    ("ingest: fold (apply_*/derive_item/counts)", ("_project",)),
    ("ingest: commit / begin", ("_commit",)),
    ("ingest: response building", ("post_events",)),
    ("reads", ("get_item", "list_items", "summary")),
)


def frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--focus", default=None, help="only functions whose name contains this")
    args = parser.parse_args()

    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    total = 0
    for line in Path(args.profile).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        for name in set(frames):
            inclusive[name] += n
        if frames:
            self_time[frames[-1]] += n
        funcs = [f.split(" (", 1)[0] for f in frames]
        phase = "other (event loop, uvicorn, starlette, threads)"
        for label, markers in PHASES:
            if any(m in funcs for m in markers):
                phase = label
                break
        phases[phase] += n
    if not total:
        raise SystemExit("no samples")

    def show(title: str, counter: Counter[str]) -> None:
        print(f"\n{title} ({total:,} samples)")
        shown = 0
        for name, n in counter.most_common():
            if args.focus and args.focus not in name:
                continue
            print(f"  {n / total:6.1%}  {name}")
            shown += 1
            if shown >= args.top:
                break

    print(f"phases ({total:,} samples)")
    for label, n in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {n / total:6.1%}  {label}")
    show("inclusive (the function or anything it called)", inclusive)
    show("self (the function's own code)", self_time)


if __name__ == "__main__":
    main()
