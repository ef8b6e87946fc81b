"""Handing work to a team: wtr push (branches and pull requests)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from worktree_runner.cli.base import cli, complete_streams, open_store, repo_option, run_option
from worktree_runner.errors import EXIT_FAILED, EXIT_OK, BadInput
from worktree_runner.forge import FORGES
from worktree_runner.run import registry


@cli.command()
@click.argument("streams", nargs=-1, shell_complete=complete_streams)
@repo_option
@run_option
@click.option("--remote", metavar="NAME", default=None,
              help="Where to push (default: the target's upstream remote, else origin).")
@click.option("--pr", "open_pr", is_flag=True,
              help="Also open or update one pull request per stream (gh or glab).")
@click.option("--draft", is_flag=True, help="With --pr: open new pull requests as drafts.")
@click.option("--forge", type=click.Choice(FORGES), default=None,
              help="With --pr: the forge, when the remote's URL does not tell.")
def push(streams: tuple[str, ...], repo_dir: Path | None, run_id: str | None,
         remote: str | None, open_pr: bool, draft: bool, forge: str | None) -> None:
    """Push succeeded STREAMS' branches (default: all of them) for review.

    \b
    Each branch wtr/<run>/<stream> is pushed with a lease: a remote branch that someone
    else moved is never overwritten (the stream is reported, nothing forced).
    With --pr, each stream gets one pull request (GitHub through 'gh', GitLab through
    'glab'): based on the target, or stacked on the branch of its single dependency;
    titled by its description; its body says what the stream was asked, what its agent
    reported, which files changed and what was checked. Pushing again updates the
    branches and the requests, never opens a second one. Recorded in 'wtr status'.
    Exit 0 when every stream was pushed, 1 when one was not, 2 for bad input.
    """
    from worktree_runner.push import PushRequest, push_streams
    from worktree_runner.run.runner import load_run_plan

    if draft and not open_pr:
        raise BadInput("--draft goes with --pr")
    if forge and not open_pr:
        raise BadInput("--forge goes with --pr")
    repo, store = open_store(repo_dir, run_id)
    request = PushRequest(streams, remote, open_pr, draft, forge)
    with registry.hold_run(store):
        outcomes = push_streams(repo, store, load_run_plan(store), request)
    for outcome in outcomes:
        for line in outcome.lines:
            click.echo(line, err=not outcome.ok)
    sys.exit(EXIT_OK if all(o.ok for o in outcomes) else EXIT_FAILED)
