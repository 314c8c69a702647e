"""Guards 5 and 6: concurrency limits (runs at once per key) and rate limits (runs started per key in a
rolling window). Both ``wait``, naming the key and its use: ``concurrency publish account:42 3/3``.

Keys are templates over the run's fields: ``{account}`` gives one key per account, ``global`` one for
everything, ``{stage}-{scenario}`` any combination."""

from __future__ import annotations

import re
from collections.abc import Mapping

from stagewatch.domain.guards.snapshot import Action, Decision, Snapshot

# How soon to ask again for a concurrency slot: slots free when runs end, which nobody can predict.
CONCURRENCY_RETRY = 5.0

_FIELD = re.compile(r"\{([a-z_]+)\}")


def render_key(template: str, fields: Mapping[str, str | None]) -> str | None:
    """The key a template names for these fields; None when a field it needs is unknown (the limit does
    not apply: an item without an account is in no account's quota). A lone ``{account}`` reads
    ``account:42``, so blockers say what they count."""
    needed = _FIELD.findall(template)
    if any(not fields.get(name) for name in needed):
        return None
    if len(needed) == 1 and template == "{" + needed[0] + "}":
        return f"{needed[0]}:{fields[needed[0]]}"
    return _FIELD.sub(lambda m: str(fields[m.group(1)]), template)


def concurrency(snapshot: Snapshot) -> Decision | None:
    for use in snapshot.concurrency:
        if use.used >= use.limit:
            blocker = f"concurrency {use.slot}"
            return Decision(
                Action.WAIT,
                f"{blocker} {use.used}/{use.limit}",
                retry_after=CONCURRENCY_RETRY,
                blocker=blocker,
            )
    return None


def rate(snapshot: Snapshot) -> Decision | None:
    for use in snapshot.rates:
        if use.used < use.limit:
            continue
        oldest = use.oldest_at if use.oldest_at is not None else snapshot.now
        retry = max(1.0, oldest + use.window - snapshot.now)
        blocker = f"rate {use.slot}"
        return Decision(
            Action.WAIT,
            f"{blocker} {use.used}/{use.limit} per {_span(use.window)}",
            retry_after=retry,
            blocker=blocker,
        )
    return None


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
