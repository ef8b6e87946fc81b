"""Commands for looking at a stream's work: diff, path."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from worktree_runner import git
from worktree_runner.cli.base import cli, complete_streams, open_store, repo_option, run_option
from worktree_runner.errors import BadInput
from worktree_runner.run import registry
from worktree_runner.run.candidates import candidate_diff
from worktree_runner.run.state import RunStore, StreamRecord


def _stream(store: RunStore, name: str) -> StreamRecord:
    record = store.record.streams.get(name)
    if record is None:
        raise registry.unknown_stream(store, name)
    return record


@cli.command()
@click.argument("stream", shell_complete=complete_streams)
@repo_option
@run_option
@click.option("--stat", is_flag=True, help="Only the files changed and how much (git's --stat).")
@click.option("--attempt", type=click.IntRange(min=1), metavar="K",
              help="Candidate K of a best-of-N stream (attempts: N), kept or not.")
def diff(stream: str, repo_dir: Path | None, run_id: str | None, stat: bool,
         attempt: int | None) -> None:
    """Show STREAM's own changes: its base commit to its branch tip.

    \b
    Printed by git itself, so its pager and colours apply as they would to 'git diff'.
    Example:  wtr diff api --stat
              wtr diff api --run checkout-2 > api.patch
              wtr diff api --attempt 2      candidate 2 of a best-of-N stream
    """
    repo, store = open_store(repo_dir, run_id)
    record = _stream(store, stream)
    if attempt is not None:
        base, tip = candidate_diff(repo, record, attempt)
        sys.exit(git.show_diff(repo, base, tip, stat))
    head = git.ref_commit(repo, f"refs/heads/{record.branch}") or record.head_commit
    if not record.base_commit or not head:
        raise BadInput(f"stream '{stream}' has no changes to show: it never started "
                       f"({record.status})", hint=f"see 'wtr logs {stream}'")
    sys.exit(git.show_diff(repo, record.base_commit, head, stat))


@cli.command()
@click.argument("stream", required=False, shell_complete=complete_streams)
@repo_option
@run_option
@click.option("--merge", "of_merge", is_flag=True,
              help="The integration worktree of a halted merge instead.")
def path(stream: str | None, repo_dir: Path | None, run_id: str | None, of_merge: bool) -> None:
    """Print STREAM's worktree path (or with --merge, the halted merge's).

    \b
    Example:  cd "$(wtr path api)"
              cd "$(wtr path --merge)"   while 'wtr merge' is halted
    Exit 2, saying why, when there is no such worktree.
    """
    if (stream is None) == (not of_merge):
        raise BadInput("give a STREAM or --merge, not both" if of_merge
                       else "give a STREAM, or --merge for the integration worktree")
    _, store = open_store(repo_dir, run_id)
    click.echo(_merge_path(store) if stream is None else _stream_path(store, stream))


def _stream_path(store: RunStore, name: str) -> Path:
    record = _stream(store, name)
    if record.worktree is None:
        raise BadInput(f"stream '{name}' has no worktree: it never started ({record.status})",
                       hint=f"see 'wtr logs {name}'")
    worktree = Path(record.worktree)
    if not worktree.is_dir():
        removed = "removed by 'wtr clean'" if store.record.cleaned_at else "gone"
        raise BadInput(f"the worktree of stream '{name}' is {removed} ({worktree})",
                       hint=f"its work is on branch {record.branch}" if not
                       store.record.cleaned_at else None)
    return worktree


def _merge_path(store: RunStore) -> Path:
    merge = store.record.merge
    worktree = merge.get("worktree")
    if merge.get("state") != "halted" or not worktree or not Path(worktree).is_dir():
        raise BadInput(f"no merge of run {store.run_id} is halted, so there is no "
                       "integration worktree", hint="'wtr merge' starts one")
    return Path(worktree)
