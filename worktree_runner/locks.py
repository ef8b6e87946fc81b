"""``wtr lock``: a named lock shared by every worktree of a repository, held while CMD runs.

The lock is a file lock in the common git dir, so the kernel releases it when its holder
dies, even by SIGKILL. Waiting backs off exponentially with jitter (tenacity).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from filelock import FileLock, Timeout
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from worktree_runner import git
from worktree_runner.errors import BadInput, WtrError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def lock_paths(repo: git.Repository, name: str) -> tuple[Path, Path]:
    if not _NAME.fullmatch(name) or ".." in name:
        raise BadInput(f"'{name}' is not a valid lock name: use letters, digits, . _ -")
    folder = repo.state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.lock", folder / f"{name}.holder"


def run_locked(repo: git.Repository, name: str, timeout: float, command: Sequence[str],
               env: Mapping[str, str]) -> int:
    """Run ``command`` while holding lock ``name``; its exit code."""
    lock_path, holder_path = lock_paths(repo, name)
    lock = FileLock(str(lock_path))
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(Timeout),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            stop=stop_after_delay(timeout),
        ):
            with attempt:
                lock.acquire(timeout=0)
    except RetryError:
        raise WtrError(f"lock '{name}' is still held after {timeout:g}s, by "
                       f"{_holder(holder_path)}") from None
    try:
        holder_path.write_text(json.dumps({
            "pid": os.getpid(), "since": time.time(),
            "stream": env.get("WTR_STREAM"), "run": env.get("WTR_RUN"),
        }))
        try:
            return subprocess.call(list(command))
        except OSError as exc:
            raise BadInput(f"cannot run {command[0]!r}: {exc.strerror}") from None
    finally:
        holder_path.unlink(missing_ok=True)
        lock.release()


def _holder(path: Path) -> str:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return "an unknown holder"
    who = f"stream {data['stream']} of run {data['run']}" if data.get("stream") else "a process"
    since = time.strftime("%H:%M:%S", time.localtime(data.get("since", 0)))
    return f"{who} (pid {data.get('pid')}, since {since})"
