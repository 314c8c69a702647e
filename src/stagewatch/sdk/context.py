"""The run the current code is inside, carried in a ``contextvars.ContextVar`` so that threads and
concurrent asyncio tasks never see each other's ids. Log handlers, trace propagation and the SDK's
``current_run()`` all read it from here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunContext:
    """The ids that tie a log line or a child span to one run of one stage of one item."""

    item_id: str
    run_id: str
    stage: str
    trace_id: str
    span_id: str
    attempt: int = 1
    pipeline: str | None = None

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` header naming this run's span as the parent (sampled)."""
        return f"00-{self.trace_id}-{self.span_id}-01"


_current: ContextVar[RunContext | None] = ContextVar("stagewatch_run", default=None)


def current_context() -> RunContext | None:
    """The run this code executes in, or None outside any ``client.stage(...)``."""
    return _current.get()


@contextmanager
def bound(run: RunContext) -> Iterator[RunContext]:
    """Make ``run`` the current run for the duration of the block (nesting restores the outer one)."""
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)
