"""What each tool of ``wtr mcp`` does, as plain functions raising the project's errors.

``progress`` is ``wtr progress``, ``report`` is a write of ``WTR_REPORT``, the locks are
``wtr lock``'s, ``owner`` applies the rules of the ownership check: a stream may change
what its ``files`` or its ``shared`` entries match, and never a file brought in by ``copy``,
and ``request_change`` is ``wtr request``. Everything else about other streams is read,
never written.
"""

from __future__ import annotations

import functools
import os
import posixpath
import threading
from pathlib import Path
from typing import Any

import anyio

from worktree_runner import coordinate, git, statefs
from worktree_runner.errors import BadInput, WtrError
from worktree_runner.locks import HeldLock, describe_holder, lock_path
from worktree_runner.mcp.binding import Binding
from worktree_runner.plan.model import Stream
from worktree_runner.plan.patterns import compile_patterns
from worktree_runner.run.progress import report_progress
from worktree_runner.run.state import Status, StreamRecord

MAX_REPORT_CHARS = 256 * 1024
MAX_LOCK_WAIT = 600.0
MAX_REQUEST_WAIT = 600.0  # (below MCP_CALL_SECONDS, what codex is given for one call)


def progress(binding: Binding, message: str, percent: int | None, blocked: bool) -> str:
    if not message.strip():
        raise BadInput("say what you are doing: the message is empty")
    if percent is not None and not 0 <= percent <= 100:
        raise BadInput(f"percent must be 0-100, not {percent}")
    report_progress(binding.env, message, percent, blocked, lambda: binding.repo)
    shown = f" ({percent}%)" if percent is not None else ""
    return (f"recorded for stream {binding.stream}{shown}: {message}"
            + (" [blocked]" if blocked else ""))


def report(binding: Binding, markdown: str) -> str:
    if not markdown.strip():
        raise BadInput("the report is empty")
    if len(markdown) > MAX_REPORT_CHARS:
        raise BadInput(f"the report is {len(markdown)} characters; keep it under "
                       f"{MAX_REPORT_CHARS}")
    path = binding.store.report_path(binding.stream)
    try:
        statefs.write_text(path, markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as exc:
        raise WtrError(f"cannot write the report {path}: {exc.strerror}") from None
    return (f"report saved ({len(markdown)} characters) to {path}; a second call replaces "
            "it. People see it in wtr status and the run report.")


async def request_change(binding: Binding, path: str, what: str, why: str, wait: bool,
                         timeout: float) -> dict[str, Any]:
    """``wtr request``: the blocking wait runs in a thread, so the server's other tools
    (and its end) go on meanwhile; a call given up (cancelled) stops waiting."""
    if not 0 <= timeout <= MAX_REQUEST_WAIT:
        raise BadInput(f"timeout must be 0-{MAX_REQUEST_WAIT:g} seconds, not {timeout:g}")
    caller = coordinate.Caller(binding.run, binding.stream, binding.worktree)
    stop = threading.Event()
    ask = functools.partial(coordinate.request_change, caller, path, what, why, wait,
                            timeout, stop)
    try:
        answer = await anyio.to_thread.run_sync(ask, abandon_on_cancel=True)
    finally:
        stop.set()
    if answer.halted:
        raise WtrError(answer.message)
    return {"message": answer.message, **answer.to_json()}


def owner(binding: Binding, path: str) -> dict[str, Any]:
    """Who owns ``path`` in the run's plan, and whether this stream may change it."""
    relative = _relative(binding, path)
    plan, mine = binding.plan, binding.spec
    owners = [s.name for s in plan.streams if compile_patterns(s.files).match_file(relative)]
    shared = compile_patterns(plan.shared).match_file(relative)
    copied = relative in binding.run.record.copied
    allowed = compile_patterns(mine.scope).match_file(relative) and not copied
    return {"path": relative, "owners": owners, "shared": shared,
            "shared_with": [s.name for s in plan.streams
                            if s.shared and compile_patterns(s.shared).match_file(relative)],
            "you": binding.stream, "may_change": allowed,
            "why": _why(binding.stream, owners, shared, mine.shared, allowed, copied)}


def _relative(binding: Binding, path: str) -> str:
    """``path`` relative to the repository root (given relative, or inside the worktree)."""
    text = path.strip()
    if os.path.isabs(text):
        try:
            text = str(Path(text).relative_to(binding.worktree))
        except ValueError:
            raise BadInput(f"{path} is not inside your worktree {binding.worktree}: give a "
                           "path relative to its root, like src/app.py") from None
    normal = posixpath.normpath(text)
    if not text or normal == "." or normal.startswith("../") or normal == "..":
        raise BadInput(f"'{path}' is not a path inside the repository: give one relative to "
                       "your worktree's root, like src/app.py")
    return normal


def _why(me: str, owners: list[str], shared: bool, my_shared: tuple[str, ...],
         allowed: bool, copied: bool) -> str:
    if copied:
        return ("a file brought in by the plan's copy: it is never committed; change it and "
                "it still fails the ownership check")
    if allowed:
        return (f"stream {me} owns it" if me in owners
                else "a shared path your stream lists: you may change it")
    if shared:
        return ("a shared path your stream does not list: only streams that list it in "
                "'shared' may change it" + ("" if not my_shared else
                                            f" (yours lists: {', '.join(my_shared)})"))
    if owners:
        return (f"owned by {', '.join(owners)}: changing it fails your stream's ownership "
                "check; ask its owner for the change instead (request_change, or wtr "
                "request PATH --what ... --why ...)")
    return ("no stream owns it: changing it fails your stream's ownership check; ask a "
            "person for it (request_change, or wtr request PATH --what ... --why ...)")


def streams(binding: Binding) -> list[dict[str, Any]]:
    """The other streams: status, progress, what they own and what their commits changed."""
    record = binding.run.load()
    return [_stream_view(binding, binding.plan.stream(name) if name in binding.plan.names
                         else None, entry)
            for name, entry in record.streams.items() if name != binding.stream]


def _stream_view(binding: Binding, spec: Stream | None, entry: StreamRecord) -> dict[str, Any]:
    progress_seen = binding.run.progress(entry.name) or {}
    return {
        "name": entry.name, "status": entry.status,
        "description": spec.description if spec is not None else "",
        "files": list(spec.files) if spec is not None else [],
        "depends_on": entry.depends_on, "branch": entry.branch,
        "progress": {"percent": progress_seen.get("percent"),
                     "message": progress_seen.get("message"),
                     "blocked": bool(progress_seen.get("blocked", False))},
        "changed_files": _changed_so_far(binding, entry),
        "failure": entry.failure.message if entry.failure is not None else None,
    }


def _changed_so_far(binding: Binding, entry: StreamRecord) -> list[str]:
    """What the stream's commits changed: recorded once its work is checked, read from its
    branch (base commit to tip, no worktree touched) while it runs."""
    if entry.status != Status.RUNNING or not entry.base_commit:
        return list(entry.changed_files)
    tip = git.ref_commit(binding.repo, f"refs/heads/{entry.branch}")
    if tip is None:
        return list(entry.changed_files)
    return git.changed_paths(binding.repo, entry.base_commit, tip)


class LockBook:
    """The run's named locks this server holds for its agent. They are file locks, so the
    kernel gives them back when the server ends however it ends; the server also gives
    them back when its agent goes away (``release_all``)."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.held: dict[str, HeldLock] = {}
        self.waiting: set[str] = set()  # (two calls at once would wait for each other)

    async def take(self, name: str, timeout: float) -> str:
        if name in self.held:
            return f"you already hold lock '{name}'"
        if name in self.waiting:
            raise BadInput(f"you are already waiting for lock '{name}' in another call")
        self.waiting.add(name)
        try:
            return await self._take(name, timeout)
        finally:
            self.waiting.discard(name)

    async def _take(self, name: str, timeout: float) -> str:
        if not 0 <= timeout <= MAX_LOCK_WAIT:
            raise BadInput(f"timeout must be 0-{MAX_LOCK_WAIT:g} seconds, not {timeout:g}")
        lock = HeldLock(_lock_file(self.binding, name))
        holder = {"stream": self.binding.stream, "run": self.binding.run.run_id,
                  "via": "wtr mcp"}
        if not await lock.acquire_async(timeout, holder):
            raise WtrError(f"lock '{name}' is still held after {timeout:g}s, by "
                           f"{describe_holder(lock)}; do other work and try again later")
        self.held[name] = lock
        return (f"you hold lock '{name}' now; call unlock('{name}') as soon as the work it "
                "guards is done (it is also released when you exit)")

    def give_back(self, name: str) -> str:
        lock = self.held.pop(name, None)
        if lock is None:
            yours = ", ".join(sorted(self.held)) or "none"
            raise BadInput(f"you do not hold lock '{name}' (you hold: {yours})")
        lock.release()
        return f"lock '{name}' released"

    def release_all(self) -> None:
        for name in list(self.held):
            self.held.pop(name).release()


def _lock_file(binding: Binding, name: str) -> Path:
    try:
        return lock_path(binding.repo, name)
    except OSError as exc:
        raise WtrError(f"cannot make the locks folder in {binding.repo.state_dir}: "
                       f"{exc.strerror}") from None
