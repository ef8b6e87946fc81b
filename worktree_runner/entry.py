"""The ``wtr`` program's first code: loads the command line, and turns a Ctrl-C that
comes while the modules still load (before the command line's own handler is set) into
exit 130 and one line, not a traceback."""

import sys


def main() -> None:
    keep_interrupts()
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


# How long a Ctrl-C swallowed by a finalizer waits before it is delivered again.
REDELIVER_SECONDS = 0.05


def keep_interrupts() -> None:
    """A Ctrl-C (or the SIGTERM a run turns into one) that lands while Python runs a
    finalizer (an object's ``__del__``, a weakref callback, a generator's close) cannot
    leave it: Python prints "Exception ignored in ..." with a traceback and the command
    goes on as if nothing came (the chaos harness saw a run do that). Such an interrupt
    is printed by no one and sent again a moment later, when it stops the command as
    any Ctrl-C does; every other unraisable exception is reported as before."""
    report = sys.unraisablehook

    def unraisable(what: "sys.UnraisableHookArgs") -> None:
        if not isinstance(what.exc_value, KeyboardInterrupt):
            report(what)
        elif not sys.is_finalizing():  # exiting anyway: the interrupt changes nothing
            import os
            import signal
            import threading

            later = threading.Timer(REDELIVER_SECONDS, os.kill, (os.getpid(), signal.SIGINT))
            later.daemon = True
            later.start()

    sys.unraisablehook = unraisable


def _interrupted() -> None:
    from worktree_runner.errors import EXIT_INTERRUPTED

    print("wtr: interrupted", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)
