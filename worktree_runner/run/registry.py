"""Where runs live, how they are named, and which one a command means."""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worktree_runner import git, statefs
from worktree_runner.errors import BadInput, UnknownRun, WtrError
from worktree_runner.locks import HeldLock
from worktree_runner.run.state import RunState, RunStore


def runs_root(repo: git.Repository) -> Path:
    return repo.state_dir / "runs"


def _number(run_id: str, name: str) -> int | None:
    match = re.fullmatch(re.escape(name) + r"-(\d+)", run_id)
    return int(match.group(1)) if match else None


def next_run_id(repo: git.Repository, plan_name: str, worktrees_root: Path | None = None) -> str:
    """``<plan name>-<n>``, one above every run of that name this repository has had, and
    (when ``worktrees_root`` is given) whose worktree folder is not taken there: several
    repositories may share one worktrees folder."""
    root = runs_root(repo)
    taken = [_number(p.name, plan_name) for p in root.iterdir()] if root.exists() else []
    number = max((n for n in taken if n is not None), default=0) + 1
    while worktrees_root is not None and (worktrees_root / f"{plan_name}-{number}").exists():
        number += 1
    return f"{plan_name}-{number}"


def create_run_dir(repo: git.Repository, plan_name: str,
                   worktrees_root: Path | None = None) -> RunStore:
    """Claim a new run folder, and its folder for worktrees; ``mkdir`` without exist_ok
    makes each claim race-free, against other runs and other repositories alike."""
    root = runs_root(repo)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        run_dir = root / next_run_id(repo, plan_name, worktrees_root)
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        try:
            claimed = worktrees_root is None or _claim(worktrees_root / run_dir.name)
        except BadInput:
            run_dir.rmdir()
            raise
        if not claimed:  # taken in the shared worktrees folder: try the next number
            run_dir.rmdir()
            continue
        (repo.state_dir / "latest").write_text(run_dir.name + "\n")
        return RunStore(run_dir)


def _claim(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as exc:
        raise BadInput(f"cannot create the worktrees folder {folder}: {exc.strerror}",
                       hint="check 'worktrees_dir' in the plan and that folder's permissions"
                       ) from None
    return True


def list_runs(repo: git.Repository) -> list[RunStore]:
    """Every run with a readable state, oldest first."""
    root = runs_root(repo)
    stores = [RunStore(p) for p in root.iterdir() if (p / "state.json").exists()] if (
        root.exists()
    ) else []
    return sorted(stores, key=_created_at)


def _created_at(store: RunStore) -> tuple[str, str]:
    try:
        return (store.load().created_at, store.run_id)
    except BadInput:  # a damaged run sorts first and is reported when opened
        return ("", store.run_id)


def open_run(repo: git.Repository, run_id: str | None = None) -> RunStore:
    """The run named ``run_id``, or the most recent one."""
    if run_id is None:
        latest = repo.state_dir / "latest"
        run_id = latest.read_text().strip() if latest.exists() else None
        if not run_id or not (runs_root(repo) / run_id / "state.json").exists():
            runs = list_runs(repo)
            if not runs:
                raise UnknownRun(
                    "this repository has no runs yet", hint="start one with 'wtr run PLAN'"
                )
            run_id = runs[-1].run_id
    store = RunStore(runs_root(repo) / run_id)
    if not store.state_path.exists():
        known = ", ".join(s.run_id for s in list_runs(repo)) or "none"
        raise UnknownRun(f"no run named '{run_id}' (runs: {known})", hint="see 'wtr runs'")
    store.load()
    return store


def unknown_stream(store: RunStore, name: str) -> UnknownRun:
    known = ", ".join(store.record.streams)
    return UnknownRun(f"run {store.run_id} has no stream '{name}' (streams: {known})")


LOG_CHUNK = 256 * 1024


def read_log(store: RunStore, name: str, follow: bool, poll: float = 0.5,
             since: int = 0) -> Iterator[str]:
    """The stream's log in pieces (never the whole file in memory), from byte ``since``;
    with ``follow``, keep reading until the stream is no longer running."""
    path = store.log_path(name)
    position = since
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        with contextlib.suppress(OSError), statefs.open_read(path) as handle:
            if handle.seek(0, os.SEEK_END) < position:
                # Cut down to its log_limit meanwhile: go on from what is now its end.
                yield "\n[wtr: the log was cut to its log_limit here; reading on]\n"
                position = handle.tell()
            handle.seek(position)
            while chunk := handle.read(LOG_CHUNK):
                position += len(chunk)
                if text := decoder.decode(chunk):
                    yield text
        if not follow or store.load().streams[name].status not in ("pending", "running"):
            if rest := decoder.decode(b"", final=True):
                yield rest
            return
        time.sleep(poll)


def summary(store: RunStore) -> dict[str, Any]:
    """One line of ``wtr runs``; a run whose state cannot be read is listed as damaged."""
    try:
        record = store.load()
    except BadInput as exc:
        return {"run": store.run_id, "state": "damaged", "plan": None, "created_at": "",
                "finished_at": None, "counts": {}, "merge": None, "error": exc.message}
    counts: dict[str, int] = {}
    for stream in record.streams.values():
        counts[stream.status] = counts.get(stream.status, 0) + 1
    return {"run": record.run, "state": effective_state(store, record.state), "plan": record.plan,
            "created_at": record.created_at, "finished_at": record.finished_at,
            "counts": counts, "merge": record.merge.get("state", "none")}


def finished_runs(repo: git.Repository) -> tuple[list[RunStore], list[str]]:
    """Finished runs not cleaned yet, and why each unreadable run was left out."""
    found: list[RunStore] = []
    damaged: list[str] = []
    for store in list_runs(repo):
        try:
            record = store.load()
        except BadInput as exc:
            damaged.append(exc.message)
            continue
        if record.state == "finished" and not record.cleaned_at:
            found.append(store)
    return found, damaged


@contextmanager
def hold_run(store: RunStore) -> Iterator[None]:
    """One wtr at a time works on a run; the lock dies with its holder (kill -9 included)."""
    lock = HeldLock(store.dir / "runner.lock")
    if not lock.acquire(0, {"command": " ".join(sys.argv[1:3])}):
        holder = lock.holder()
        described = (f"pid {holder.get('pid')}, 'wtr {holder.get('command', '')}', "
                     f"since {holder.get('since')}" if holder else "pid unknown")
        raise WtrError(f"run {store.run_id} is being worked on by another wtr ({described})",
                       hint="wait for it to finish, or stop it with Ctrl-C")
    try:
        store.load()  # what was read before the lock may be stale by now
        yield
    finally:
        lock.release()


def run_is_active(store: RunStore) -> bool:
    """Whether a live wtr holds the run's lock (asked of its note, not by taking the lock:
    a status must never make a starting runner think the run is taken)."""
    return HeldLock(store.dir / "runner.lock").held()


def runner_of(store: RunStore) -> dict[str, object] | None:
    """Who holds the run's lock now (pid, command, since), or None."""
    lock = HeldLock(store.dir / "runner.lock")
    return lock.holder() or None if lock.held() else None


def effective_state(store: RunStore, state: str) -> str:
    """The run's state as it really is: a run recorded as running whose runner is gone
    (kill -9, a crash, a reboot) is interrupted; 'wtr resume' continues it."""
    if state == RunState.RUNNING.value and not run_is_active(store):
        return RunState.INTERRUPTED.value
    return state
