"""The MCP server itself: the tools of ``tools.py`` offered over stdio with the official SDK.

Each tool's description is what the model reads, so it says when to use the tool and what
comes back. A failure a model can act on (a bad path, a busy lock) comes back as a tool
error of one line; the server goes on. The server ends when its client closes stdin, when
its parent (the agent's CLI) is gone, or on SIGTERM/SIGHUP; whatever locks it holds are
given back then, and by the kernel if it is killed.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError

from worktree_runner import faults
from worktree_runner.errors import WtrError
from worktree_runner.mcp import tools
from worktree_runner.mcp.binding import Binding

P = ParamSpec("P")
T = TypeVar("T")
PARENT_POLL_SECONDS = 1.0

INSTRUCTIONS = """\
You are one agent of a wtr run: several agents work on one repository at once, each on
its own stream (its own branch, worktree and files). These tools connect you to the run:
report progress and your final report, take a named lock shared by every agent, ask who
owns a file before you change it, ask its owner for a change you may not make, and see
what the other streams are doing."""

PROGRESS = """\
Record how far your stream has got, for the people watching the run (wtr status, the run
report) and as a sign of life: a stream silent for too long may be stopped as stalled.
Call it when you start, at each milestone, and before long steps. blocked=true says you
cannot go on (the message says why); then stop and exit with an error.
Returns a one-line confirmation."""

REPORT = """\
Save your final report for this stream, in Markdown: what you completed, what is left or
blocks you, the tests you ran and their results. Call it once when you are done (or
stuck); a later call replaces the earlier report. It is kept outside your worktree and is
never committed. Returns where it was saved."""

LOCK = """\
Take the run's named lock NAME, shared by every agent of this repository (also by
`wtr lock NAME -- CMD` in a shell), before work that must not run twice at once: a
database migration, a shared cache, a port. Waits up to `timeout` seconds (at most 600)
while another agent holds it. Returns once you hold it, or fails naming the holder.
Hold it briefly and call unlock(NAME) when done; it is released when you exit anyway."""

UNLOCK = """\
Release the run's named lock NAME that you took with lock(NAME). Fails if you do not hold
it (and says which locks you hold)."""

OWNER = """\
Before you change a file, ask who owns it in the run's plan. PATH is relative to your
worktree's root (or absolute inside it). Returns JSON: `owners` (the streams whose files
match it), `shared` (a path no one stream owns), `may_change` (whether YOUR stream may
change it: a change you may not make fails your stream's ownership check) and `why`.
If you may not, do not change it: ask its owner for the change (request_change)."""

STREAMS = """\
See the other streams of this run: for each, its status (pending, running, succeeded,
failed, blocked, merged), its latest progress message, the file patterns it owns, the
streams it depends on, and the files its commits have changed so far. Read-only. Use it to
find out whether work you depend on is done, or who is changing a file you need."""


REQUEST_CHANGE = """\
Ask for a change in a file you do not own (owner(path) says may_change false): never
change it yourself. wtr routes the request: into the owner stream's prompt if it has not
started; to the owner's agent once its current turn ends if it is running; to a follow-up
stream of the owner's files if it has finished (your stream then depends on it and its
result comes into your branch); to a person if the path is shared or owned by no stream.
wait=true waits (up to `timeout` seconds, at most 600) for the answer: the owner's work
with the change passed its checks, the follow-up ended, or a person answered; past the
timeout a person decides. Returns JSON: `message` (what happened and what to do now),
`id`, `route` (prompt, feedback, follow_up, person), `target`, `state` (pending,
delivered, answered, escalated, timed_out) and `answer`. Fails, telling you to stop, when
waiting would close a cycle of streams waiting on each other: then report being blocked
and exit with an error."""


class _Server(MCPServer):
    """Arguments that do not fit a tool's schema are told in one line, as every other
    failure is (the SDK would pass pydantic's report of several lines on)."""

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError):
                raise
            wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                              for e in exc.__cause__.errors())
            raise ToolError(f"Error executing tool {name}: {wrong}") from None


def build(binding: Binding, book: tools.LockBook) -> MCPServer:
    server = _Server(name="wtr", instructions=INSTRUCTIONS)

    @_answers
    def progress(message: Annotated[str, Field(description="What you are doing now.")],
                 percent: Annotated[int | None, Field(description=(
                     "How far the stream is, 0-100; left out: as last said."))] = None,
                 blocked: Annotated[bool, Field(description=(
                     "True when you cannot go on (the message says why)."))] = False) -> str:
        return tools.progress(binding, message, percent, blocked)

    @_answers
    def report(markdown: Annotated[str, Field(description="The report, in Markdown.")]
               ) -> str:
        return tools.report(binding, markdown)

    @_answers_async
    async def lock(name: Annotated[str, Field(description=(
                       "The lock's name: letters, digits, . _ - (e.g. db-migrations)."))],
                   timeout: Annotated[float, Field(description=(
                       "Seconds to wait while another agent holds it (0-600)."))] = 60
                   ) -> str:
        return await book.take(name, timeout)

    @_answers_async
    async def unlock(name: Annotated[str, Field(description="The lock to release.")]) -> str:
        return book.give_back(name)

    @_answers
    def owner(path: Annotated[str, Field(description=(
                  "The file, relative to your worktree's root (e.g. src/api/orders.py)."))]
              ) -> dict[str, Any]:
        return tools.owner(binding, path)

    @_answers_async
    async def request_change(
            path: Annotated[str, Field(description=(
                "The file, relative to your worktree's root (e.g. src/db/models.py)."))],
            what: Annotated[str, Field(description="The change you need, in a sentence.")],
            why: Annotated[str, Field(description="What you need it for.")],
            wait: Annotated[bool, Field(description=(
                "True to wait for the answer before going on."))] = False,
            timeout: Annotated[float, Field(description=(
                "With wait: seconds to wait before a person is asked (0-600)."))] = 600
            ) -> dict[str, Any]:
        return await tools.request_change(binding, path, what, why, wait, timeout)

    @_answers
    def streams() -> dict[str, Any]:
        return {"you": binding.stream, "streams": tools.streams(binding)}

    for fn, text in ((progress, PROGRESS), (report, REPORT), (lock, LOCK), (unlock, UNLOCK),
                     (owner, OWNER), (request_change, REQUEST_CHANGE), (streams, STREAMS)):
        server.add_tool(fn, description=text, structured_output=False)
    return server


def _answers(fn: Callable[P, T]) -> Callable[P, T]:
    """A failure the model can act on becomes a tool error of one line."""
    @functools.wraps(fn)
    def tool(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except WtrError as exc:
            raise ToolError(exc.lines()[0]) from None
    return tool


def _answers_async(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def tool(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except WtrError as exc:
            raise ToolError(exc.lines()[0]) from None
    return tool


def serve(binding: Binding) -> None:
    """Serve on stdin/stdout until the client or the parent goes away."""
    book = tools.LockBook(binding)
    server = build(binding, book)
    faults.point("mcp_serving", binding.stream)  # (tests: a server that dies or hangs here)
    try:
        anyio.run(_serve_until_gone, server, book)
    finally:
        book.release_all()


async def _serve_until_gone(server: MCPServer, book: tools.LockBook) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_parent, book)
        group.start_soon(_watch_signals, book)
        await server.run_stdio_async()
        group.cancel_scope.cancel()


def _leave(book: tools.LockBook) -> None:
    """End now, locks given back first. (Not by cancelling: the SDK reads stdin in a worker
    thread, which nothing interrupts while another process still holds the pipe open.)"""
    book.release_all()
    os._exit(0)


async def _watch_parent(book: tools.LockBook) -> None:
    """End when the agent's CLI is gone, even if something else still holds the pipe."""
    parent = os.getppid()
    while os.getppid() == parent:
        await anyio.sleep(PARENT_POLL_SECONDS)
    _leave(book)


async def _watch_signals(book: tools.LockBook) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as received:
        async for _ in received:
            _leave(book)
