"""Error fingerprints: failures that differ only in numbers, ids or quoted values group together."""

from __future__ import annotations

import hashlib
import re

# Order matters: whole tokens (uuids, urls, hex ids) are replaced before bare numbers inside them.
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"https?://\S+"), "<url>"),
    (re.compile(r"\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalise_message(message: str) -> str:
    """The message with the parts that vary between occurrences replaced by placeholders."""
    for pattern, placeholder in _NORMALISERS:
        message = pattern.sub(placeholder, message)
    return message.strip()[:500]


def fingerprint(stage: str, error_type: str, message: str) -> str:
    """A short stable id for 'this kind of failure at this stage'."""
    basis = f"{stage}\x1f{error_type}\x1f{normalise_message(message)}"
    return hashlib.sha1(basis.encode(), usedforsecurity=False).hexdigest()[:16]
