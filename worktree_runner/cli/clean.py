"""The clean command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from worktree_runner.cli.base import cli, open_repo, repo_option, run_option
from worktree_runner.errors import EXIT_FAILED, BadInput
from worktree_runner.git import Repository
from worktree_runner.run import registry


@cli.command()
@repo_option
@run_option
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Also delete unmerged stream branches (their tips "
              "pinned under refs/worktree-runner/archive/ first).")
@click.option("--all", "every_run", is_flag=True, help="Clean every finished run.")
@click.option("--remote", "remote_branches", is_flag=True,
              help="Also delete the pushed copies ('wtr push') of the branches it deletes.")
@click.option("--pool", "empty_pool", is_flag=True,
              help="Only empty the worktree pool: remove the clean worktrees earlier cleans "
                   "kept for the next run (runs are left as they are).")
def clean(repo_dir: Path | None, run_id: str | None, dry_run: bool, force: bool,
          every_run: bool, remote_branches: bool, empty_pool: bool) -> None:
    """Remove a run's worktrees and the branches whose work is in the target.

    Uncommitted changes in a worktree are saved under refs/worktree-runner/rescue/
    before it is removed, then the plan's teardown commands run in it. A branch counts
    as merged when the target holds its commits or its content (a squash or rebase
    merge), or when its pull request was merged; branches with work found nowhere else
    are kept and listed. Remote branches are deleted only with --remote.
    Up to the plan's 'pool' worktrees are kept, emptied and detached, for the next run
    to reuse ('pool: 0' in the plan turns this off; --pool empties the pool).
    """
    from worktree_runner.clean import clean_run

    if every_run and run_id:
        raise BadInput("--all and --run cannot go together",
                       hint="--all cleans every finished run; --run ID cleans one")
    repo = open_repo(repo_dir)
    if empty_pool:
        _empty_pool(repo, dry_run)
        return
    damaged: list[str] = []
    if every_run:
        stores, damaged = registry.finished_runs(repo)
    else:
        stores = [registry.open_run(repo, run_id)]
    if not stores:
        click.echo("no finished run to clean")
    for store in stores:
        report = clean_run(repo, store, dry_run, force, remote_branches)
        click.echo(f"run {report.run}:" + (" (dry run, nothing changed)" if dry_run else ""))
        for line in [*report.rescued, *report.done, *report.kept]:
            click.echo(f"  {line}")
    for message in damaged:
        click.echo(f"wtr: skipped: {message}", err=True)
    if damaged:
        sys.exit(EXIT_FAILED)


def _empty_pool(repo: Repository, dry_run: bool) -> None:
    from worktree_runner import pool

    lines = pool.empty(repo, dry_run)
    click.echo("\n".join(lines) if lines else "the worktree pool is empty")
