"""The command line: parses, dispatches, prints. Commands live in modules by area."""

from worktree_runner.cli import (
    agents,
    attach,
    clean,
    events,
    hook,
    merge,
    plan,
    push,
    report,
    review,
    run,
)
from worktree_runner.cli.base import cli

__all__ = ["agents", "attach", "clean", "cli", "events", "hook", "main", "merge", "plan", "push",
           "report", "review", "run"]


def main() -> None:
    cli(prog_name="wtr")
