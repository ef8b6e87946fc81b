"""After a crash or a stop: match a run's state with what is really there, and say what to redo.

Used by ``wtr resume``, ``wtr retry`` and ``wtr accept``. Streams already finished are
never redone; their commits are never touched.
"""

from __future__ import annotations

import getpass
import os
import re
import time
from pathlib import Path
from typing import Any

from worktree_runner import faults, git, logs, procs, statefs
from worktree_runner.errors import BadInput
from worktree_runner.plan.model import Plan
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore, Status, StreamRecord, now
from worktree_runner.run.usage import attempt_start


def reconcile(store: RunStore, plan: Plan, retry_failed: bool = False) -> dict[str, procs.Agent]:
    """Put every unfinished stream back to pending; return the agents worth waiting for.

    A stream that was running keeps its agent if that agent is alive (same pid and start
    time) or left an exit code; otherwise it gets a new attempt in the same worktree.
    """
    recovered: dict[str, procs.Agent] = {}
    for name, stream in store.record.streams.items():
        if stream.status == Status.RUNNING.value:
            agent = _surviving_agent(store, stream)
            if agent is not None:
                recovered[name] = agent
            store.update_stream(name, "stream_recovered", status=Status.PENDING.value,
                                adopted=agent is not None)
            faults.point("reconciled", name)
        elif stream.status == Status.FAILED.value and (
            retry_failed or (stream.failure is not None and stream.failure.kind == "interrupted")
        ):
            store.update_stream(name, "stream_requeued", status=Status.PENDING.value)
        elif stream.status == Status.BLOCKED.value:
            store.update_stream(name, "stream_requeued", status=Status.PENDING.value,
                                blocked_by=None)
    return recovered


def _surviving_agent(store: RunStore, stream: StreamRecord) -> procs.Agent | None:
    """The last attempt's agent: alive (by its recorded pid, or found where a runner killed
    before recording it left it, a supervisor still starting waited for), or ended with
    its exit code kept. None: it never started, or its supervisor was killed too."""
    if not stream.attempts:
        return None
    exit_file = store.exit_path(stream.name, stream.attempts)
    agent = procs.Agent(stream.pid or 0, stream.pid_start, exit_file)
    if stream.pid and agent.running():
        return agent
    # (found now, not when the stream starts again: one ending meanwhile would be missed)
    living = living_agent(store, stream.name)
    if living is not None:
        return living
    if statefs.is_file(exit_file):  # (looked at after: none can end unseen between)
        if not stream.pid:  # (it ended before its runner noted it)
            store.update_stream(stream.name, **_unrecorded(store, stream.name, stream.attempts))
        return agent
    return None


def _unrecorded(store: RunStore, name: str, attempt: int) -> dict[str, Any]:
    """For an agent whose pid its runner died before noting: where its output starts in
    the log and when it started, in place of the attempt before's."""
    return {"log_start": attempt_start(store.log_path(name), attempt),
            "agent_started": time.time()}


def living_agent(store: RunStore, name: str) -> procs.Agent | None:
    """The stream's agent that is still alive, whoever started it, recorded as adopted; the
    newest, should a crash have left two (the others are stopped). One whose supervisor is
    still starting (a runner killed between its fork and its exec) is waited for."""
    def waiting() -> None:
        store.event("agent_awaited", stream=name)
        logs.debug("waiting for a supervisor still starting", stream=name)

    alive = procs.stream_agents(store.stream_dir(name), waiting)
    found = newest(alive)
    if found is None:
        return None
    for other in alive:
        if other is not found:
            other.stop()
    record = store.record.streams[name]
    attempts = max(record.attempts, attempt_of(found.exit_file))
    # (a pid not recorded: the offset and time recorded are the attempt before's)
    times = ({"agent_started": record.agent_started or time.time()} if record.pid
             else _unrecorded(store, name, attempts))
    store.update_stream(name, "agent_adopted", pid=found.pid, pid_start=found.started,
                        attempts=attempts, adopted=True, **times)
    return found


def newest(agents: list[procs.Agent]) -> procs.Agent | None:
    """The agent of the latest attempt among ``agents`` (a crash may have left two)."""
    return max(agents, key=lambda agent: attempt_of(agent.exit_file)) if agents else None


def attempt_of(exit_file: Path) -> int:
    """The attempt an exit file is named for (``exit-3.json``: 3)."""
    match = re.fullmatch(r"exit-(\d+)\.json", exit_file.name)
    return int(match.group(1)) if match else 0


def _failed_stream(store: RunStore, name: str, action: str) -> StreamRecord:
    """The named stream, which must exist and have failed, or a one-line error."""
    stream = store.record.streams.get(name)
    if stream is None:
        raise registry.unknown_stream(store, name)
    if stream.status != Status.FAILED.value:
        raise BadInput(f"stream '{name}' is {stream.status}, not failed",
                       hint=f"only failed streams can be {action}")
    return stream


def requeue(store: RunStore, names: list[str], message: str | None = None) -> None:
    """``wtr retry``: the named failed streams, and what waits on them, go back to pending;
    with ``message``, each one's next attempt continues its agent's session with it."""
    for name in names:
        _failed_stream(store, name, "retried")
    for name in names:
        store.update_stream(name, "stream_requeued", status=Status.PENDING.value,
                            **({"message": message} if message is not None else {}))
    _unblock(store)


def accept(repo: git.Repository, store: RunStore, name: str, reason: str) -> StreamRecord:
    """A human declares a failed stream's work good: it counts as succeeded from now on."""
    stream = _failed_stream(store, name, "accepted")
    if stream.start_conflict is not None:
        raise BadInput(f"stream '{name}' has not started: the merge of the streams it starts "
                       f"from waits for a human in {stream.worktree}",
                       hint=f"resolve and commit it there, then run 'wtr retry {name}'")
    head = git.ref_commit(repo, f"refs/heads/{stream.branch}")
    if head is None or not stream.base_commit:
        raise BadInput(f"stream '{name}' has no branch with work to accept")
    changed = git.changed_paths(repo, stream.base_commit, head)
    accepted = {"by": _who(repo), "reason": reason or "no reason given", "at": now(),
                "failure": stream.failure.kind if stream.failure else ""}
    record = store.update_stream(name, "stream_accepted", status=Status.SUCCEEDED.value,
                                 head_commit=head, changed_files=changed, accepted=accepted)
    _unblock(store)
    return record


def _unblock(store: RunStore) -> None:
    for name, stream in store.record.streams.items():
        if stream.status == Status.BLOCKED.value:
            store.update_stream(name, "stream_requeued", status=Status.PENDING.value,
                                blocked_by=None)


def _who(repo: git.Repository) -> str:
    name = repo.git("config", "user.name", check=False).stdout.strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")
