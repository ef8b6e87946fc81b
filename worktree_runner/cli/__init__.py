"""The command line: parses, dispatches, prints. Commands live in modules by area."""

from worktree_runner.cli import agents, clean, merge, plan, push, review, run
from worktree_runner.cli.base import cli

__all__ = ["agents", "clean", "cli", "main", "merge", "plan", "push", "review", "run"]


def main() -> None:
    cli(prog_name="wtr")
