"""The ``wtr`` program's first code: loads the command line, and turns a Ctrl-C that
comes while the modules still load (before the command line's own handler is set) into
exit 130 and one line, not a traceback."""

import sys


def main() -> None:
    try:
        from worktree_runner.cli import main as command_line

        command_line()
    except KeyboardInterrupt:
        _interrupted()
    except RuntimeError as exc:  # a Ctrl-C while a class was being made, wrapped by Python
        # (also inside a command: click passes a RuntimeError on, so this is the one place)
        from worktree_runner.errors import interrupted

        if not interrupted(exc):
            raise
        _interrupted()


def _interrupted() -> None:
    from worktree_runner.errors import EXIT_INTERRUPTED

    print("wtr: interrupted", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)
