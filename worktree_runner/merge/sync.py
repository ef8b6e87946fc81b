"""``wtr sync``: bring a stream up to date with the target's current tip.

The stream's own commits (its base commit to its tip) are replayed onto the target's tip
in the object database first; only when that goes through cleanly does the stream's
worktree move (``git reset --keep``: its branch and files), so on a conflict nothing in
the worktree changes. The old tip stays pinned under ``refs/worktree-runner/sync/``.

An agent syncs while ``wtr run`` holds the run, so sync does not write the run's state:
it leaves ``sync.json`` in the stream's folder (as ``wtr progress`` leaves its file), and
the runner takes the new base commit from there when it checks the stream. A human's
``wtr sync STREAM`` on a run nobody holds also records it in the state at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner import git
from worktree_runner.errors import Halted, WtrError
from worktree_runner.merge.replay import MemoryReplay
from worktree_runner.run.state import RunStore, now, read_json, write_json_atomic


@dataclass
class Synced:
    stream: str
    onto: str
    old_head: str
    new_head: str
    commits: int
    files: list[str] = field(default_factory=list)


def sync_path(store: RunStore, name: str) -> Path:
    return store.stream_dir(name) / "sync.json"


def synced_base(store: RunStore, name: str) -> str | None:
    """The base commit a sync gave the stream, if it synced since the state last said."""
    data = read_json(sync_path(store, name))
    return data.get("base_commit") if isinstance(data, dict) else None


def sync_document(store: RunStore, name: str) -> dict[str, Any] | None:
    data = read_json(sync_path(store, name))
    return data if isinstance(data, dict) else None


def sync_stream(repo: git.Repository, store: RunStore, name: str, holds_run: bool) -> Synced:
    record = store.record
    stream = record.streams[name]
    worktree = Path(stream.worktree) if stream.worktree else None
    if worktree is None or not worktree.exists():
        raise WtrError(f"stream '{name}' has no worktree to sync",
                       hint="it has not started, or was cleaned")
    dirty = git.tracked_changes(worktree)
    if dirty:
        raise WtrError(f"stream '{name}' has uncommitted changes ({', '.join(dirty[:5])}); "
                       "sync moves its files", hint="commit them first, then sync")
    target = git.ref_commit(repo, f"refs/heads/{record.target}")
    if target is None:
        raise WtrError(f"target branch '{record.target}' does not exist")
    base = synced_base(store, name) or stream.base_commit or record.base_commit
    head = git.head_of(worktree)
    if base == target or git.is_ancestor(repo, target, base):
        return Synced(name, target, head, head, 0)
    new_head, commits = _replay(repo, name, target, base, head)
    git.update_ref(repo, f"refs/worktree-runner/sync/{record.run}/{name}/{head}", head)
    moved = git.reset_keep(worktree, new_head)
    if not moved.ok:
        raise WtrError(f"could not move stream '{name}' onto {record.target}: "
                       f"{moved.stderr.strip()}; its old tip is pinned at "
                       f"refs/worktree-runner/sync/{record.run}/{name}/{head}")
    write_json_atomic(sync_path(store, name), {"base_commit": target, "old_head": head,
                                               "head": new_head, "at": now()})
    if holds_run:
        changed = git.changed_paths(repo, target, new_head)
        finished = stream.head_commit is not None
        store.update_stream(name, "stream_synced", base_commit=target,
                            **({"head_commit": new_head, "changed_files": changed}
                               if finished else {}))
    store.event("stream_synced", stream=name, onto=target, old_head=head, head=new_head)
    return Synced(name, target, head, new_head, commits)


def _replay(repo: git.Repository, name: str, target: str, base: str,
            head: str) -> tuple[str, int]:
    memory = MemoryReplay(repo)
    try:
        commits, merges = memory.history(base, head)
        if merges:
            raise WtrError(f"stream '{name}' has merge commits, which sync does not replay",
                           hint="let the merge land its net change instead")
        replayed = memory.replay(target, base, head, commits)
    finally:
        memory.close()
    if replayed.tip is None:
        raise SyncConflict(name, target, replayed.conflicts)
    return replayed.tip, len(commits)


class SyncConflict(Halted):
    def __init__(self, name: str, target: str, files: list[str]) -> None:
        super().__init__(
            f"sync halted: stream '{name}' conflicts with the target's tip "
            f"({target[:12]}) in {', '.join(files)}; nothing was changed",
            ["  go on without syncing (the merge will ask a human about these files),",
             "  or bring those files in line with the target by hand, commit, and sync again"])
        self.stream = name
        self.files = files


def record_conflict(store: RunStore, error: SyncConflict) -> None:
    """Mark the stream blocked on the conflict, where status shows it."""
    write_json_atomic(sync_path(store, error.stream),
                      {"conflicted_files": error.files, "at": now(), **(
                          {"base_commit": synced_base(store, error.stream)}
                          if synced_base(store, error.stream) else {})})
    write_json_atomic(store.progress_path(error.stream), {
        "percent": None, "blocked": True, "at": now(),
        "message": f"sync conflicts with the target in {', '.join(error.files)}"})
    store.event("stream_sync_conflict", stream=error.stream, files=error.files)
