"""What ``wtr run`` shows while it works: a live table on a terminal, else a line per change.

Both are subscribers of the run's events: the table redraws from the status, the lines
come from the stream transitions as they are published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from rich.console import Console
from rich.live import Live

from worktree_runner import render
from worktree_runner.events import Event
from worktree_runner.run.state import RunStore
from worktree_runner.run.status import status_document

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
    console = Console()
    with Live(console=console, refresh_per_second=4, transient=False,
              get_renderable=lambda: render.status_table(status_document(store), bars=True)):
        return work()
