"""``wtr lock``: a named lock shared by every worktree of a repository, held while CMD runs.

The lock is a file lock in the common git dir, so the kernel releases it when its holder
dies, even by SIGKILL. Waiting backs off exponentially with jitter (tenacity).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from worktree_runner import git
from worktree_runner.errors import BadInput, WtrError
from worktree_runner.procs import process_start_time, run_forwarding_signals

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class HeldLock:
    """A file lock with a note beside it saying who holds it (pid, since when, and what).

    Serves both ``wtr lock NAME`` and the one-runner-per-run rule. The kernel releases
    the lock when its holder dies, even by SIGKILL; a stale note is simply overwritten.
    """

    def __init__(self, path: Path) -> None:
        # Not thread-local: an MCP server (wtr mcp) may take it in one worker thread and
        # give it back in another; the lock belongs to the process, as the kernel sees it.
        self.lock = FileLock(str(path), thread_local=False)
        self.note = path.with_suffix(".holder")

    def acquire(self, timeout: float, holder: Mapping[str, object]) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds with backoff; False if busy."""
        if not self._try() and not self._wait_for(timeout):
            return False
        self._write_note(holder)
        return True

    async def acquire_async(self, timeout: float, holder: Mapping[str, object]) -> bool:
        """:meth:`acquire` for an event loop: the waits are the loop's, so a caller that is
        cancelled (a client gives up on its request) leaves without ever taking the lock."""
        from tenacity import AsyncRetrying, RetryError

        if not self._try():
            try:
                async for attempt in AsyncRetrying(**_backoff(timeout)):
                    with attempt:
                        self.lock.acquire(timeout=0)
            except RetryError:
                return False
        self._write_note(holder)
        return True

    def _try(self) -> bool:
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def _write_note(self, holder: Mapping[str, object]) -> None:
        pid = os.getpid()
        self.note.write_text(json.dumps({"pid": pid, "pid_start": process_start_time(pid),
                                         "since": time.time(), **holder}))

    def _wait_for(self, timeout: float) -> bool:
        """The lock was busy: try again with backoff."""
        from tenacity import RetryError, Retrying

        try:
            for attempt in Retrying(**_backoff(timeout)):
                with attempt:
                    self.lock.acquire(timeout=0)
        except RetryError:
            return False
        return True

    def release(self) -> None:
        self.note.unlink(missing_ok=True)
        self.lock.release()

    def busy(self) -> bool:
        if not self.acquire(0, {}):
            return True
        self.release()
        return False

    def held(self) -> bool:
        """Whether a live process holds the lock: its note names a process that is still
        the same one (pid and start time); without a note, by trying the lock."""
        try:
            data = json.loads(self.note.read_text())
        except (OSError, ValueError):
            return self.busy()
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
            return self.busy()
        started = process_start_time(data["pid"])
        return started is not None and started == data.get("pid_start", started)

    def holder(self) -> dict[str, object]:
        """What the holder wrote, with ``since`` as a clock time; empty if unreadable."""
        try:
            data = json.loads(self.note.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        data["since"] = time.strftime("%H:%M:%S", time.localtime(float(data.get("since", 0))))
        return data


def _backoff(timeout: float) -> dict[str, Any]:
    """How a busy lock is tried again: exponential backoff with jitter, up to ``timeout``.
    (tenacity is imported only here: it imports tornado when that is installed, a tenth of
    a second of every command.)"""
    from tenacity import retry_if_exception_type, stop_after_delay, wait_random_exponential

    return {"retry": retry_if_exception_type(Timeout),
            "wait": wait_random_exponential(multiplier=0.05, max=2.0),
            "stop": stop_after_delay(timeout)}


def describe_holder(lock: HeldLock) -> str:
    """Who holds ``lock``, in words: "stream api of run r-1 (pid 12, since 10:01:02)"."""
    return _describe(lock.holder())


def lock_path(repo: git.Repository, name: str) -> Path:
    if not _NAME.fullmatch(name) or ".." in name:
        raise BadInput(f"'{name}' is not a valid lock name: use letters, digits, . _ -")
    folder = repo.state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.lock"


def run_locked(repo: git.Repository, name: str, timeout: float, command: Sequence[str],
               env: Mapping[str, str]) -> int:
    """Run ``command`` while holding lock ``name``; its exit code."""
    try:
        lock = HeldLock(lock_path(repo, name))
        held = lock.acquire(timeout, {"stream": env.get("WTR_STREAM"), "run": env.get("WTR_RUN")})
    except OSError as exc:
        raise WtrError(f"cannot take lock '{name}' in {repo.state_dir / 'locks'}: "
                       f"{exc.strerror}", hint="that folder is not writable from here") from None
    if not held:
        raise WtrError(f"lock '{name}' is still held after {timeout:g}s, by "
                       f"{_describe(lock.holder())}")
    try:
        return run_forwarding_signals(command)
    except OSError as exc:
        raise BadInput(f"cannot run {command[0]!r}: {exc.strerror}") from None
    finally:
        lock.release()


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "an unknown holder"
    who = (f"stream {holder['stream']} of run {holder['run']}" if holder.get("stream")
           else "a process")
    return f"{who} (pid {holder.get('pid')}, since {holder['since']})"
