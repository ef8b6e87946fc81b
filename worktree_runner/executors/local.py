"""The local executor: each stream's life runs on this machine, in a thread of the runner:
its agent (``run/stream.py``), or its best-of-N candidates side by side
(``run/candidates.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from worktree_runner.run.stream import RunContext, run_stream


@contextmanager
def local_streams(ctx: RunContext) -> Iterator[Callable[[str], bool]]:
    """What runs one stream here: its agent, or its candidates."""
    from worktree_runner.run.candidates import run_best_of

    yield lambda name: (run_best_of(ctx, name) if ctx.plan.stream(name).attempts > 1
                        else run_stream(ctx, name))
