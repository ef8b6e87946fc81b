"""The command line: parses, dispatches, prints. The only module that imports click."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from worktree_runner import __version__, git, render
from worktree_runner.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, PlanInvalid, WtrError
from worktree_runner.logs import configure_logging
from worktree_runner.plan.analysis import analyze
from worktree_runner.plan.load import load_plan
from worktree_runner.plan.starter import DEFAULT_PLAN_FILE, write_starter_plan


class WtrGroup(click.Group):
    """Maps the project's errors to one line on stderr and the SPEC's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WtrError as exc:
            first, *rest = exc.lines()
            click.echo(f"wtr: {first}", err=True)
            for line in rest:
                click.echo(line, err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("wtr: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def repo_option(func: Any) -> Any:
    return click.option(
        "--repo",
        "repo_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The repository (default: the one containing the current directory).",
    )(func)


def open_repo(repo_dir: Path | None) -> git.Repository:
    """The repository named by the command's --repo, else the group's, else the cwd's."""
    ctx = click.get_current_context()
    fallback = (ctx.find_root().obj or {}).get("repo_dir")
    return git.open_repository(repo_dir or fallback)


@click.group(cls=WtrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wtr")
@click.option("-v", "--verbose", is_flag=True, help="Log every step (git commands included).")
@repo_option
@click.pass_context
def cli(ctx: click.Context, verbose: bool, repo_dir: Path | None) -> None:
    """Run many coding agents on one repository at once, each in its own git worktree.

    \b
    A plan (YAML) names work streams: the files each owns, its agent, its prompt,
    what it depends on. Typical session:
      wtr init                 write a starter plan for this repository
      wtr check PLAN           validate it: waves, critical path, file ownership
    Exit codes: 0 ok, 1 work failed, 2 bad input, 3 halted for a human, 130 interrupted.
    """
    ctx.obj = {"repo_dir": repo_dir}
    configure_logging(verbose)


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@repo_option
def init(path: Path | None, repo_dir: Path | None) -> None:
    """Write a commented starter plan (default: worktree-plan.yaml at the repository root).

    It suggests one stream per top-level folder, the checked-out branch as base and
    target, and the claude preset as agent. Never overwrites an existing file.
    """
    repo = open_repo(repo_dir)
    target = path if path is not None else repo.toplevel / DEFAULT_PLAN_FILE
    written = write_starter_plan(repo, target)
    click.echo(f"wrote {written}; edit it, then run: wtr check {written}")


@cli.command()
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False, path_type=Path))
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as one JSON document.")
def check(plan_file: Path, repo_dir: Path | None, as_json: bool) -> None:
    """Validate PLAN against the repository and show its analysis.

    \b
    Reports the waves (streams that can run at the same time, in order), the critical
    path (the longest dependency chain), which tracked files each stream owns, files
    owned by two streams that may run together (an error), files no stream owns
    (a note) and patterns that match nothing (a warning). Exit 0 valid, 2 invalid.
    """
    try:
        plan = load_plan(plan_file)
    except PlanInvalid as exc:
        if not as_json:
            raise
        emit_json({"plan": str(plan_file), "valid": False,
                   "errors": [p.to_json() for p in exc.problems]})
        sys.exit(EXIT_BAD_INPUT)
    analysis = analyze(plan, open_repo(repo_dir))
    if as_json:
        emit_json(analysis.to_json())
    else:
        click.echo(render.check_report(analysis))
    if analysis.overlaps:
        sys.exit(EXIT_BAD_INPUT)


def main() -> None:
    cli(prog_name="wtr")
