"""What ``wtr run`` shows while it works: a live table on a terminal, else a line per change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.live import Live

from worktree_runner import render
from worktree_runner.run.state import RunStore
from worktree_runner.run.status import status_document

T = TypeVar("T")


def run_with_display(work: Callable[[], T], store: RunStore, terminal: bool) -> T:
    if not terminal:
        announced: dict[str, int] = {}
        store.listeners.append(lambda name, data: _print_transition(name, data, announced))
        return work()
    console = Console()
    with Live(console=console, refresh_per_second=4, transient=False,
              get_renderable=lambda: render.status_table(status_document(store), bars=True)):
        return work()


def _print_transition(name: str, data: dict[str, Any], announced: dict[str, int]) -> None:
    line = render.transition_line(name, data, announced)
    if line:
        click.echo(line)
