"""structlog, configured once by the CLI: readable on a terminal, JSON lines otherwise.

Importing structlog costs a good part of a second on a loaded machine (it pulls in rich
and asyncio), and every agent's ``wtr progress`` pays a start-up. So it is imported only
when something will be logged: with ``-v``, or for a run's event log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

_verbose = False


def configure_logging(verbose: bool = False, stream: TextIO | None = None) -> None:
    global _verbose
    _verbose = verbose
    if not verbose:
        return
    import structlog

    out = stream or sys.stderr
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if out.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def debug(event: str, **fields: Any) -> None:
    """A debug line (with ``-v``); free when not verbose."""
    if _verbose:
        import structlog

        structlog.get_logger("worktree_runner").debug(event, **fields)
