"""The command line: parses, dispatches, prints. Commands live in modules by area, each
imported only when one of its commands runs (the table in base.py)."""

from worktree_runner.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="wtr")
