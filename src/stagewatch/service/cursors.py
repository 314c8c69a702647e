"""Cursors of pages ordered by (time, seq), newest first: log lines and the audit trail. Opaque to
clients; a cursor this server did not issue is refused naming the field."""

from __future__ import annotations

import base64
import json
import math

from stagewatch.errors import InputError


def encode_cursor(at: float, seq: int) -> str:
    """The cursor of a page ordered by (time, seq) newest first: log lines, and the audit trail."""
    return base64.urlsafe_b64encode(json.dumps([at, seq]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, seq = json.loads(raw)
        # Only what encode_cursor makes: [finite number, integer].
        if isinstance(at, bool) or isinstance(seq, bool) or not isinstance(seq, int) or not math.isfinite(at):
            raise TypeError(cursor)
        return float(at), seq
    except (ValueError, TypeError):
        raise InputError("cursor is not one this server issued", field="cursor") from None
