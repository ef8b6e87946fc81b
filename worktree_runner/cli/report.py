"""``wtr report``: the run as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from worktree_runner.cli.base import cli, open_store, repo_option, run_option


@cli.command()
@repo_option
@run_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page (default: report.html in the run's state folder).")
@click.option("--open", "open_it", is_flag=True, help="Open the page in a browser afterwards.")
def report(repo_dir: Path | None, run_id: str | None, output: Path | None,
           open_it: bool) -> None:
    """Write the run report, one HTML file, and print its path.

    \b
    The page needs nothing else (no network, no script): a header with the run's
    facts and counts; a timeline of every stream (waiting, each attempt, checks,
    outcome, the critical path); the dependency graph in waves; per stream its
    failure, changes, report, progress and verify output; and the merge. The
    runner also keeps it in the run's folder: rewritten while the run goes (the
    page then reloads itself), when it ends, and when a merge lands, halts or is
    undone.
    """
    from worktree_runner.report import save_run_report

    _, store = open_store(repo_dir, run_id)
    path = save_run_report(store, output.resolve() if output else None)
    click.echo(str(path))
    if open_it:
        click.launch(str(path))
