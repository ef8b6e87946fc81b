"""What ``wtr run`` shows while it works: a live table on a terminal, else a line per change.

Both subscribe to the run's events: the lines are the stream transitions as they are
published; the table (with the estimated completion under it) is drawn again at each
event, and every second for the clocks and for what other processes report (an agent's
progress).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from worktree_runner import render
from worktree_runner.events import Event
from worktree_runner.run.state import RunStore
from worktree_runner.run.status import status_document

if TYPE_CHECKING:
    from rich.console import Group

T = TypeVar("T")


def run_with_display(work: Callable[[], T], store: RunStore, terminal: bool) -> T:
    if not terminal:
        announced: dict[str, int] = {}

        def print_transition(event: Event) -> None:
            line = render.transition_line(event, announced)
            if line:
                click.echo(line)

        store.subscribers.append(print_transition)
        try:
            return work()
        finally:
            store.subscribers.remove(print_transition)
    return _with_table(work, store)


def _with_table(work: Callable[[], T], store: RunStore) -> T:
    # rich is imported only for a terminal: a run to a pipe (scripts, tests) does without
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    # Read through a store of its own: the runner's record in memory is not to be
    # swapped for one read back from disk.
    def table() -> Group:
        doc = status_document(RunStore(store.dir))
        return Group(render.status_table(doc, bars=True),
                     *(Text(line) for line in render.eta_lines(doc)))

    changed, done = threading.Event(), threading.Event()

    def note(event: Event) -> None:
        changed.set()

    with Live(table(), console=Console(), auto_refresh=False, transient=False) as live:
        def redraw() -> None:
            while not done.is_set():
                changed.wait(1.0)
                changed.clear()
                # a frame the state could not give (a write under way) is skipped
                with contextlib.suppress(Exception):
                    live.update(table(), refresh=True)

        drawer = threading.Thread(target=redraw, name="live-table", daemon=True)
        store.subscribers.append(note)
        drawer.start()
        try:
            return work()
        finally:
            store.subscribers.remove(note)
            done.set()
            changed.set()
            drawer.join()
            live.update(table(), refresh=True)
