"""``wtr attach``: step into a stream's agent session, or its worktree's shell."""

from __future__ import annotations

from pathlib import Path

import click

from worktree_runner.cli.base import cli, complete_streams, open_store, repo_option, run_option
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore

TAIL_BYTES = 16 * 1024  # of the log shown before following it (its whole: 'wtr logs')


@cli.command()
@click.argument("stream", shell_complete=complete_streams)
@repo_option
@run_option
@click.option("--take-over", is_flag=True,
              help="For a running stream: stop its agent and continue its session yourself.")
def attach(stream: str, repo_dir: Path | None, run_id: str | None, take_over: bool) -> None:
    """Open STREAM's agent session interactively, in its worktree.

    \b
    Not running: its agent's CLI resumes the conversation of its last attempt
    (claude --resume, codex resume...; a new session when the CLI cannot tell
    which); a command agent gets $SHELL. Either way with the stream's
    environment (WTR_STREAM, WTR_WORKTREE...). Leave it as you leave the
    CLI or shell; the session is recorded in the stream ('wtr status').
    Then 'wtr retry STREAM' checks the work again, or 'wtr accept STREAM'.
    \b
    Running: follows its output (Ctrl-C stops following). With --take-over
    the runner stops the agent (not a failure), you continue its session,
    and when you leave, the runner checks the work as after any attempt.
    """
    from worktree_runner.run import attach as core

    repo, store = open_store(repo_dir, run_id)
    if stream not in store.record.streams:
        raise registry.unknown_stream(store, stream)
    agent = core.running_agent(store, stream)
    if agent is None:
        core.check_idle(store, stream)
    if agent is not None and not take_over:
        _follow(store, stream)
        return
    if agent is None and take_over:
        click.echo(f"wtr: {stream} is not running: nothing to take over; opening its session",
                   err=True)
    ctx = core.context(repo, store)
    session = core.opening(ctx, stream)
    if agent is not None:
        click.echo(f"wtr: stopping {stream}'s agent to hand it over to you...", err=True)
        core.take_over(store, stream, agent, session.session)
    click.echo(f"wtr: {stream}: {session.what} in {session.cwd}; leave it to return", err=True)
    with core.holding(store, took_over=agent is not None) as own_state:
        entry = core.attend(store, session, took_over=agent is not None, own_state=own_state)
    after = ("the runner now checks its work ('wtr status')" if agent is not None
             else f"'wtr retry {stream}' checks the work again, or 'wtr accept {stream}'")
    click.echo(f"wtr: left {stream} (exit {entry['exit_code']}); {after}", err=True)


def _follow(store: RunStore, stream: str) -> None:
    """The agent's output from near its end, live, until the stream is no longer running."""
    from worktree_runner import statefs

    click.echo(f"wtr: {stream} is running; following its output (Ctrl-C stops following; "
               f"'wtr attach {stream} --take-over' continues its session yourself)", err=True)
    since = max(0, statefs.size(store.log_path(stream)) - TAIL_BYTES)
    if since:
        click.echo(f"[wtr: its log from {since:,} bytes on; 'wtr logs {stream}' shows it all]",
                   err=True)
    for chunk in registry.read_log(store, stream, follow=True, since=since):
        click.echo(chunk, nl=False)
