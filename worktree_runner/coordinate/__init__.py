"""Change requests routed to a file's owner (docs/coordination.md).

An agent that needs a change in a file it does not own asks for it (``request_change``:
``wtr request``, or the MCP tool). The request goes to the owning stream's prompt if it
has not started, into its session if it is running, to a follow-up stream if it has
finished, or to a person when the path is shared or unowned. ``ask`` is the asking side,
``desk`` the runner's, ``book`` the file they share.
"""

from typing import TYPE_CHECKING, Any

from worktree_runner.coordinate.book import Request, RequestBook, Route, State

if TYPE_CHECKING:
    from worktree_runner.coordinate.ask import (
        Answer,
        Caller,
        answer_request,
        caller_from_env,
        plan_of,
        request_change,
    )

__all__ = ["Answer", "Caller", "Request", "RequestBook", "Route", "State", "answer_request",
           "caller_from_env", "plan_of", "request_change"]

_ASKING = {"Answer", "Caller", "answer_request", "caller_from_env", "plan_of", "request_change"}


def __getattr__(name: str) -> Any:
    """The asking side, imported on first use: ``wtr status`` and every run read the book,
    and ``ask`` brings the plan loader (yaml) and the sync with it."""
    if name in _ASKING:
        from worktree_runner.coordinate import ask

        return getattr(ask, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
