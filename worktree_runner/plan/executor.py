"""Where a run's streams run: on this machine (``local``) or on a Dask cluster (``dask``).

Only the description and its checks live here; running streams on Dask is
``worktree_runner.executors.dask``, imported only by runs that use it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

from worktree_runner.errors import BadInput

KINDS = ("local", "dask")
# How long the coordinator keeps trying to reach a scheduler before it gives up.
CONNECT_TIMEOUT_VARIABLE = "WTR_DASK_CONNECT_TIMEOUT"
CONNECT_TIMEOUT_SECONDS = 20.0

# tcp://host:8786, tls://[::1]:8786, ws://host:8786, inproc://..., host:8786, or local[:N]
_SCHEDULER = re.compile(
    r"local(?::[1-9]\d{0,2})?"
    r"|(?:(?:tcp|tls|ws|wss|ucx)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):\d{1,5}"
    r"|inproc://\S+"
)
# ssh://, git://, http(s)://, file:// URLs; scp-like user@host:path; or a local path
_REMOTE = re.compile(
    r"(?:ssh|git|https?|file)://\S+"
    r"|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+"
    r"|/\S*|\.{1,2}/\S*"
)


@dataclass(frozen=True)
class Executor:
    kind: str = "local"
    scheduler: str | None = None
    remote: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "scheduler": self.scheduler, "remote": self.remote}

    @property
    def local_workers(self) -> int | None:
        """N of ``local:N`` (``local`` alone: 2): a LocalCluster this run starts itself."""
        if self.scheduler is None or not self.scheduler.startswith("local"):
            return None
        _, _, count = self.scheduler.partition(":")
        return int(count) if count else 2

    def where(self) -> str:
        """Where streams run, in words."""
        if self.kind == "local":
            return "on this machine"
        cluster = (f"a local Dask cluster of {self.local_workers} worker processes"
                   if self.local_workers else f"the Dask cluster at {self.scheduler}")
        return f"on {cluster}, through the git remote {self.remote}"


def executor_from(value: Any) -> Executor:
    """The plan's ``executor`` mapping, checked; ValueError says what is wrong."""
    if not isinstance(value, dict):
        raise ValueError("must be a mapping: kind, and for dask: scheduler and remote")
    unknown = sorted(set(value) - {"kind", "scheduler", "remote"})
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}' (known: kind, scheduler, remote)")
    return checked_executor(value.get("kind", "local"), value.get("scheduler"),
                            value.get("remote"))


def checked_executor(kind: Any, scheduler: Any, remote: Any) -> Executor:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if kind == "local":
        if scheduler is not None or remote is not None:
            raise ValueError("scheduler and remote go with kind: dask")
        return Executor()
    if scheduler is None or remote is None:
        raise ValueError("kind: dask needs a scheduler (e.g. tcp://host:8786 or local:4) "
                         "and a remote every worker can fetch from and push to")
    if not isinstance(scheduler, str) or not _SCHEDULER.fullmatch(scheduler):
        raise ValueError(f"scheduler {scheduler!r} is not a Dask address: use tcp://HOST:PORT "
                         "(or tls://, ws://), HOST:PORT, or local:N")
    if not isinstance(remote, str) or not _REMOTE.fullmatch(remote):
        raise ValueError(f"remote {remote!r} is not a git URL: use ssh://..., https://..., "
                         "git@host:path, file://... or an absolute path")
    return Executor("dask", scheduler, remote)


def connect_timeout() -> float:
    """Seconds to keep trying to reach the scheduler: ``WTR_DASK_CONNECT_TIMEOUT`` when set
    (a machine that knows its scheduler answers at once, or is down, need not wait 20 s),
    else 20."""
    text = os.environ.get(CONNECT_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return CONNECT_TIMEOUT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= 3600:  # (nan compares false)
        raise BadInput(f"{CONNECT_TIMEOUT_VARIABLE}={text!r} is not a number of seconds "
                       "between 0 and 3600",
                       hint=f"unset it to wait {CONNECT_TIMEOUT_SECONDS:.0f} s")
    return seconds
