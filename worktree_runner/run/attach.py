"""``wtr attach``: a person in a stream's agent session, or in a shell, in its worktree.

A stream that is not running opens at once: its preset's interactive mode on the session
of its last attempt (``Preset.interactive``), or ``$SHELL`` for a ``command`` agent, with
the stream's environment, while this process holds the run (no ``wtr resume`` starts an
agent beside the person). A running stream is followed; ``--take-over`` stops its agent
through its supervisor, as the runner stops one, under a note (``run/handover.py``) that
tells the runner the attempt was handed over, and opens the same session for the person.
Never two agents of a stream at once: the session opens only once the agent is gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worktree_runner import git, procs
from worktree_runner.errors import BadInput, WtrError
from worktree_runner.plan.model import Stream
from worktree_runner.run import handover, recover, registry
from worktree_runner.run.guard import Guard
from worktree_runner.run.prompt import render_command
from worktree_runner.run.runner import load_run_plan
from worktree_runner.run.state import RunStore, Status, now
from worktree_runner.run.stream import (
    RunContext,
    agent_env,
    preset_of,
    stream_facts,
    write_launch_files,
)
from worktree_runner.run.usage import attempt_output

STOP_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Opening:
    """What a person's session runs: ``argv`` in ``cwd`` with ``env``."""

    stream: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    what: str  # "claude, session 1234", "a shell (/bin/bash)"
    session: str | None


def context(repo: git.Repository, store: RunStore) -> RunContext:
    """What the stream's agent would be started with (nothing of the run changes)."""
    record = store.record
    return RunContext(repo=repo, plan=load_run_plan(store), store=store,
                      base_commit=record.base_commit,
                      worktrees_root=Path(record.worktrees_root),
                      bin_dir=procs.write_wtr_shim(store.dir / "bin"),
                      guard=Guard(repo, store))


def worktree_of(ctx: RunContext, name: str) -> Path:
    """The stream's worktree; a clear error when it has none (not started, or cleaned)."""
    record = ctx.store.record.streams[name]
    path = Path(record.worktree) if record.worktree else None
    if path is not None and path.is_dir():
        return path
    if record.worktree is None:
        raise BadInput(f"{name} has no worktree yet (it is {record.status})",
                       hint="attach once it has started ('wtr status' shows it)")
    kept = git.branch_exists(ctx.repo, record.branch)
    hint = (f"'wtr retry {name}' makes it again from its branch {record.branch}" if kept
            else "its work is in the target branch; nothing is left to attach to")
    raise BadInput(f"{name} has no worktree any more ({record.worktree} was removed, "
                   "e.g. by 'wtr clean')", hint=hint)


def running_agent(store: RunStore, name: str) -> procs.Agent | None:
    """The stream's agent, if one is alive (the newest, should a crash have left two)."""
    return recover.newest(procs.stream_agents(store.stream_dir(name)))


def opening(ctx: RunContext, name: str) -> Opening:
    """The stream's session for a person: its preset's interactive mode on the session of
    its last attempt, or a shell for a ``command`` agent."""
    stream = ctx.plan.stream(name)
    cwd = worktree_of(ctx, name)
    preset = preset_of(stream)
    if preset is None:
        shell = os.environ.get("SHELL") or "sh"
        return Opening(name, [shell], cwd, agent_env(ctx, stream), f"a shell ({shell})", None)
    session = last_session(ctx, stream)
    launch = preset.interactive(stream_facts(ctx, stream), session)
    if launch is None:
        raise BadInput(f"{preset.name} has no interactive mode to open for {name}",
                       hint=f"cd \"$(wtr path {name})\" to work in its worktree yourself")
    write_launch_files(ctx, stream, launch)
    argv = render_command(launch.argv, _values(ctx, stream))
    what = f"{preset.name}, " + (f"session {session}" if session else "a new session")
    return Opening(name, procs.as_argv(argv), cwd, agent_env(ctx, stream, launch.env), what,
                   session)


def last_session(ctx: RunContext, stream: Stream) -> str | None:
    """The CLI session of the stream's last attempt: as recorded when it ended, else read
    from its output (a running one); None when its preset cannot tell."""
    preset = preset_of(stream)
    record = ctx.store.record.streams[stream.name]
    if preset is None:
        return None
    output = attempt_output(ctx.store.log_path(stream.name), record.log_start or 0)
    return (preset.session(output) if output else None) or record.session


def _values(ctx: RunContext, stream: Stream) -> dict[str, str]:
    prompt_file = ctx.store.prompt_path(stream.name)
    return {"prompt_file": str(prompt_file), "prompt": "", "stream": stream.name,
            "worktree": str(ctx.worktree(stream.name)), "branch": ctx.branch(stream.name)}


def check_idle(store: RunStore, name: str) -> None:
    """With no agent of the stream alive: refuse a stream that a live runner is about to
    start an agent for (pending, or running its setup or checks), beside the person."""
    record = store.record.streams[name]
    if not registry.run_is_active(store):
        return
    if record.status == Status.PENDING:
        raise BadInput(f"{name} is about to start in the running run {store.run_id}",
                       hint=f"once it runs: 'wtr attach {name} --take-over'")
    if record.status == Status.RUNNING:
        raise WtrError(f"{name} is between two steps (its setup, checks or next attempt); "
                       "its agent may start any moment", hint="try again in a moment, or "
                       f"follow it with 'wtr logs {name} --follow'")


def take_over(store: RunStore, name: str, agent: procs.Agent, session: str | None) -> None:
    """Stop the stream's running agent for a person, under the note that tells its runner
    this is a hand-over; return once no agent of the stream is left."""
    if not registry.run_is_active(store):
        raise WtrError(f"no wtr is watching {name}'s agent (its runner is gone)",
                       hint=f"'wtr resume --run {store.run_id}' adopts it; take it over then")
    handover.write_note(store.stream_dir(name), took_over=True,
                        attempt=store.record.streams[name].attempts, session=session)
    agent.stop()
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while running_agent(store, name) is not None:
        if time.monotonic() > deadline:
            handover.clear_note(store.stream_dir(name))
            raise WtrError(f"{name}'s agent did not stop; nothing was opened",
                           hint="look at it with 'wtr status', then try again")
        time.sleep(0.1)


@contextmanager
def holding(store: RunStore, took_over: bool) -> Iterator[bool]:
    """Hold the run while a person is in a stream that is not running, so that no runner
    starts an agent beside them (True: held); with a runner at work (it never restarts a
    finished stream, and it waits for a handed-over one), leave the run to it."""
    if took_over or registry.run_is_active(store):
        yield False
        return
    with registry.hold_run(store):
        yield True


def attend(store: RunStore, session: Opening, took_over: bool,
           own_state: bool) -> dict[str, Any]:
    """Run the person's session on this terminal to its end; record it (``own_state``:
    this process holds the run, and records it as an attempt of the stream too)."""
    stream_dir = store.stream_dir(session.stream)
    attempt = store.record.streams[session.stream].attempts
    entry: dict[str, Any] = {"kind": "attach", "started_at": now(), "took_over": took_over,
                             "attempt": attempt, "program": session.argv[0],
                             "session": session.session}
    handover.write_note(stream_dir, took_over=took_over, attempt=attempt,
                        session=session.session)
    try:
        entry["exit_code"] = procs.run_forwarding_signals(session.argv, session.cwd,
                                                          session.env)
    finally:
        entry["finished_at"] = now()
        entry.setdefault("exit_code", None)
        handover.record(stream_dir, entry)
        if own_state:
            _record_attempt(store, session.stream, entry)
        handover.clear_note(stream_dir)
    return entry


def _record_attempt(store: RunStore, name: str, entry: dict[str, Any]) -> None:
    """The session as an attempt of kind ``attach`` in the stream's attempt log."""
    record = store.record.streams[name]
    logged = {"attempt": record.attempts + 1, "kind": "attach",
              "started_at": entry["started_at"], "resumed": entry["session"],
              "finished_at": entry["finished_at"], "failure": None,
              "exit_code": entry["exit_code"]}
    store.update_stream(name, "attempt_attached", attempts=record.attempts + 1,
                        attempt_log=[*record.attempt_log, logged])
