"""Commands about a plan: init, check."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from worktree_runner import git
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
@click.option("--streams", "stream_list", metavar="LIST|N", default=None,
              help="Streams from a quick list: 'api:src/api/**,ui:src/ui/**|tests/ui/**'; "
                   "with --suggest, the number of streams wanted.")
@click.option("--suggest", is_flag=True,
              help="Propose streams from the history: folders that change together share a "
                   "stream, coupled streams are ordered, hot files become shared.")
@click.option("--commits", type=click.IntRange(min=1), default=1000, show_default=True,
              help="With --suggest: how many recent commits to learn from.")
@click.option("--since", metavar="DATE", default=None,
              help="With --suggest: only commits after DATE (2024-05-01, 6.months).")
def init(path: Path | None, repo_dir: Path | None, from_dirs: bool,
         stream_list: str | None, suggest: bool, commits: int, since: str | None) -> None:
    """Write a commented starter plan (default: worktree-plan.yaml at the repository root).

    It suggests one stream per top-level folder (or the streams of --streams), the
    checked-out branch as base and target, and the claude preset as agent. Never
    overwrites an existing file.

    \b
    With --suggest the streams come from the branch's history (the last --commits
    commits, merges and commits changing over 50 files left out): folders that change
    together land in one stream, streams that still change together get conflicts_with,
    and hot files (changed by many commits, with several areas) become shared.
      wtr init --suggest --streams 4
    """
    from worktree_runner.plan.starter import (
        DEFAULT_PLAN_FILE,
        parse_stream_list,
        write_starter_plan,
    )

    if from_dirs and (stream_list or suggest):
        raise BadInput("use --from-dirs alone, without --streams or --suggest")
    source = click.get_current_context().get_parameter_source
    given = [f"--{name}" for name in ("commits", "since")
             if source(name) == click.core.ParameterSource.COMMANDLINE]
    if given and not suggest:
        raise BadInput(f"{' and '.join(given)} only work with --suggest",
                       hint="add --suggest, or leave them out")
    repo = open_repo(repo_dir)
    target = path if path is not None else repo.toplevel / DEFAULT_PLAN_FILE
    if suggest:
        _init_suggested(repo, target, _stream_count(stream_list), commits, since)
        return
    streams = parse_stream_list(stream_list) if stream_list is not None else None
    written = write_starter_plan(repo, target, streams)
    click.echo(f"wrote {written}; edit it, then run: wtr check {written}")


def _stream_count(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise BadInput(f"--streams '{text}': with --suggest, give the number of streams",
                       hint="for example: wtr init --suggest --streams 4")
    return int(text)


def _init_suggested(repo: git.Repository, target: Path, streams: int | None, commits: int,
                    since: str | None) -> None:
    from worktree_runner.plan.starter import refuse_existing, write_plan_text
    from worktree_runner.plan.suggest import suggest_plan

    refuse_existing(target)  # before reading history, which can take a moment
    suggestion = suggest_plan(repo, target, streams, commits, since)
    written = write_plan_text(target, suggestion.text)
    if suggestion.note:
        click.echo(f"note: {suggestion.note}")
    else:
        click.echo(f"{len(suggestion.streams)} streams suggested from {suggestion.commits} "
                   "commits")
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
    (a note) and patterns that match nothing (a warning). Also warns about patterns
    of streams that may run together reaching the same paths though no tracked file
    matches yet (both list NOTES.md; scripts/** beside scripts/common.sh), and about
    a stream whose several predecessors overlap. Exit 0 valid, 2 invalid.
    """
    from worktree_runner import render, sandbox
    from worktree_runner.plan.analysis import analyze
    from worktree_runner.plan.load import load_plan

    try:
        repo = open_repo(repo_dir)
        plan_file = plan_path(plan_file, repo)
        plan = load_plan(plan_file)
        analysis = analyze(plan, repo, history=True)
        sandbox.require(plan.sandboxed)
    except WtrError as exc:
        if not as_json:
            raise
        problems = exc.problems if isinstance(exc, PlanInvalid) else [PlanProblem("", exc.message)]
        emit_json({"plan": str(plan_file or "worktree-plan.yaml"), "valid": False,
                   "errors": [p.to_json() for p in problems]})
        sys.exit(exc.exit_code)
    if as_json:
        emit_json(analysis.to_json())
        if not analysis.valid:
            sys.exit(EXIT_BAD_INPUT)
        return
    click.echo(render.check_report(analysis))
    analysis.raise_if_invalid()
