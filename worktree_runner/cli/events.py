"""``wtr events``: a run's event log, for integrations (editors, CI, chat bots)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from worktree_runner.cli.base import cli, open_store, repo_option, run_option

if TYPE_CHECKING:
    from worktree_runner.events import Event


@cli.command()
@repo_option
@run_option
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing new events until the run ends (or Ctrl-C); waits across "
                   "a runner that died until 'wtr resume' carries on.")
@click.option("--since", metavar="N", type=click.IntRange(min=0), default=0,
              help="Only events numbered above N (each event's 'seq').")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object a line, as kept in the run's events.jsonl.")
def events(repo_dir: Path | None, run_id: str | None, follow: bool, since: int,
           as_json: bool) -> None:
    """Print the run's events, oldest first: streams started, progressed, succeeded,
    failed or blocked; landings started, landed, halted or undone; syncs, cleaning,
    notifications.

    \b
    Each event has a number (seq), a kind (stream.started), a UTC time, the stream when
    it has one, and its facts. The numbers only grow, so a reader that saw up to N
    catches up with --since N. Nothing here is needed to resume a run: the run's state is.
    Examples:  wtr events ; wtr events --follow --json ; wtr events --since 120
    """
    from worktree_runner import events as log
    from worktree_runner import render
    from worktree_runner.run.state import RunState

    _, store = open_store(repo_dir, run_id)
    path = store.events_path
    # The log's end is taken before the state is read: when the state says running, the
    # end of this run is an event after that mark.
    mark = log.last_seq(path)
    if not follow or store.load().state != RunState.RUNNING.value:
        shown: Iterable[Event] = log.read_since(path, since)
    else:
        shown = log.follow(path, since, done=lambda e: e.kind in log.RUN_ENDS and e.seq > mark)
    for event in shown:
        click.echo(json.dumps(event.to_json()) if as_json else render.event_line(event))
