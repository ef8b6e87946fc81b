"""Commands about a plan: init, check."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from worktree_runner.cli.base import (
    cli,
    emit_json,
    open_repo,
    plan_argument,
    plan_path,
    repo_option,
)
from worktree_runner.errors import (
    EXIT_BAD_INPUT,
    BadInput,
    PlanInvalid,
    PlanProblem,
    WtrError,
)


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@repo_option
@click.option("--from-dirs", is_flag=True,
              help="One stream per top-level folder (what init does without --streams).")
@click.option("--streams", "stream_list", metavar="LIST", default=None,
              help="Streams from a quick list: 'api:src/api/**,ui:src/ui/**|tests/ui/**'.")
def init(path: Path | None, repo_dir: Path | None, from_dirs: bool,
         stream_list: str | None) -> None:
    """Write a commented starter plan (default: worktree-plan.yaml at the repository root).

    It suggests one stream per top-level folder (or the streams of --streams), the
    checked-out branch as base and target, and the claude preset as agent. Never
    overwrites an existing file.
    """
    from worktree_runner.plan.starter import (
        DEFAULT_PLAN_FILE,
        parse_stream_list,
        write_starter_plan,
    )

    if from_dirs and stream_list:
        raise BadInput("use --from-dirs or --streams, not both")
    repo = open_repo(repo_dir)
    streams = parse_stream_list(stream_list) if stream_list is not None else None
    target = path if path is not None else repo.toplevel / DEFAULT_PLAN_FILE
    written = write_starter_plan(repo, target, streams)
    click.echo(f"wrote {written}; edit it, then run: wtr check {written}")


@cli.command()
@plan_argument
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as one JSON document.")
def check(plan_file: Path | None, repo_dir: Path | None, as_json: bool) -> None:
    """Validate PLAN (default: worktree-plan.yaml) and show its analysis.

    \b
    Reports the waves (streams that can run at the same time, in order), the critical
    path (the longest dependency chain), which tracked files each stream owns, files
    owned by two streams that may run together (an error), files no stream owns
    (a note) and patterns that match nothing (a warning). Exit 0 valid, 2 invalid.
    """
    from worktree_runner import render
    from worktree_runner.plan.analysis import analyze
    from worktree_runner.plan.load import load_plan

    try:
        repo = open_repo(repo_dir)
        plan_file = plan_path(plan_file, repo)
        plan = load_plan(plan_file)
        analysis = analyze(plan, repo)
    except WtrError as exc:
        if not as_json:
            raise
        problems = exc.problems if isinstance(exc, PlanInvalid) else [PlanProblem("", exc.message)]
        emit_json({"plan": str(plan_file or "worktree-plan.yaml"), "valid": False,
                   "errors": [p.to_json() for p in problems]})
        sys.exit(exc.exit_code)
    if as_json:
        emit_json(analysis.to_json())
        if analysis.overlaps:
            sys.exit(EXIT_BAD_INPUT)
        return
    click.echo(render.check_report(analysis))
    analysis.raise_if_invalid()
