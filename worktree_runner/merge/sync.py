"""``wtr sync``: bring a stream up to date with the target's current tip.

The stream's own commits (its base commit to its tip) are replayed onto the target's tip
in the object database first; only when that goes through cleanly does the stream's
worktree move (``git reset --keep``: its branch and files), so on a conflict nothing in
the worktree changes. The old tip stays pinned under ``refs/worktree-runner/sync/``.

When that replay stops on a commit, or the stream's history holds merge commits, the
target is merged into the stream's tip instead (in memory too): a later commit that
cleared an earlier one's conflict counts, and nothing of the branch is rewritten. A
branch that already holds the target's tip (its agent merged it) only takes that tip as
its base. Either way the stream's base becomes the target's tip, so what the target
brought is never counted as the stream's own change.

An agent syncs while ``wtr run`` holds the run, so sync does not write the run's state:
it leaves ``sync.json`` in the stream's folder (as ``wtr progress`` leaves its file), and
the runner takes the new base commit from there when it checks the stream. A human's
``wtr sync STREAM`` on a run nobody holds also records it in the state at once. A
conflict is recorded there too, with its hunks: the runner tells them to the agent
(feedback rounds, run/stream.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner import git
from worktree_runner.errors import Halted, WtrError
from worktree_runner.merge.replay import MemoryReplay
from worktree_runner.run.state import RunStore, now, read_json, write_json_atomic

HUNKS_CHARS = 6000
CONTEXT_LINES = 3
OURS_MARK, THEIRS_MARK = "<<<<<<<", ">>>>>>>"


@dataclass
class Synced:
    stream: str
    onto: str
    old_head: str
    new_head: str
    commits: int
    files: list[str] = field(default_factory=list)
    how: str = "rebased"  # up to date | rebased | merged | contained


@dataclass(frozen=True)
class _Moved:
    base: str
    head: str
    commits: int
    how: str


def sync_path(store: RunStore, name: str) -> Path:
    return store.stream_dir(name) / "sync.json"


def synced_base(store: RunStore, name: str) -> str | None:
    """The base commit a sync gave the stream, if it synced since the state last said."""
    data = read_json(sync_path(store, name))
    return data.get("base_commit") if isinstance(data, dict) else None


def sync_document(store: RunStore, name: str) -> dict[str, Any] | None:
    data = read_json(sync_path(store, name))
    return data if isinstance(data, dict) else None


def pending_conflict(store: RunStore, name: str) -> dict[str, Any] | None:
    """The stream's last sync, when it conflicted and nothing has synced it since."""
    data = sync_document(store, name)
    return data if data and data.get("conflicted_files") else None


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
    moved = _bring_up_to_date(repo, name, record.target, target, base, head)
    if moved.how == "up to date" and not pending_conflict(store, name):
        return Synced(name, target, head, head, 0, how=moved.how)
    if moved.head != head:
        _move(repo, worktree, record.run, name, record.target, head, moved)
    write_json_atomic(sync_path(store, name), {"base_commit": moved.base, "old_head": head,
                                               "head": moved.head, "how": moved.how,
                                               "at": now()})
    _unblock(store, name)
    if holds_run:
        changed = git.changed_paths(repo, moved.base, moved.head)
        finished = stream.head_commit is not None
        store.update_stream(name, "stream_synced", base_commit=moved.base,
                            **({"head_commit": moved.head, "changed_files": changed}
                               if finished else {}))
    store.event("stream_synced", stream=name, onto=target, old_head=head, head=moved.head,
                how=moved.how)
    return Synced(name, target, head, moved.head, moved.commits, how=moved.how)


def move_onto(repo: git.Repository, store: RunStore, name: str, worktree: Path, base: str,
              onto: str, onto_name: str) -> str:
    """Bring the stream's own commits (``base`` to its HEAD) onto ``onto``, a commit other
    than the target's tip (a follow-up's result: coordinate/), as ``sync_stream`` brings
    them onto the target, and record ``onto`` as its base in ``sync.json``. Its new HEAD;
    raises SyncConflict, changing nothing, on a conflict."""
    head = git.head_of(worktree)
    moved = _bring_up_to_date(repo, name, onto_name, onto, base, head)
    if moved.how == "up to date":
        return head
    if moved.head != head:
        _move(repo, worktree, store.run_id, name, onto_name, head, moved)
    write_json_atomic(sync_path(store, name), {"base_commit": moved.base, "old_head": head,
                                               "head": moved.head, "how": moved.how,
                                               "at": now()})
    return moved.head


def _bring_up_to_date(repo: git.Repository, name: str, target_name: str, target: str,
                      base: str, head: str) -> _Moved:
    if base == target or git.is_ancestor(repo, target, base):
        return _Moved(base, head, 0, "up to date")
    if git.is_ancestor(repo, target, head):
        return _Moved(target, head, 0, "contained")
    memory = MemoryReplay(repo)
    try:
        commits, merges = memory.history(base, head)
        replayed = None if merges else memory.replay(target, base, head, commits)
    finally:
        memory.close()
    if replayed is not None and replayed.tip is not None:
        return _Moved(target, replayed.tip, len(commits), "rebased")
    merged = git.merge_trees(repo, head, target)
    if merged.tree is None:
        raise SyncConflict(name, target_name, target, merged.conflicts,
                           conflict_hunks(repo, merged, target_name))
    why = ("its history holds merge commits" if replayed is None
           else "its commits, replayed one by one, conflict; merged as a whole they do not")
    message = f"Merge {target_name} ({target[:12]}) into {name}\n\nwtr sync: {why}.\n"
    return _Moved(target, git.commit_tree(repo, merged.tree, [head, target], message), 1,
                  "merged")


def _move(repo: git.Repository, worktree: Path, run: str, name: str, target_name: str,
          head: str, moved: _Moved) -> None:
    """Move the worktree (branch and files) to the new tip; a rebase's old tip is pinned
    first (a merge keeps it on the branch)."""
    pin = f"refs/worktree-runner/sync/{run}/{name}/{head}"
    if moved.how == "rebased":
        git.update_ref(repo, pin, head)
    result = git.reset_keep(worktree, moved.head)
    if not result.ok:
        kept = f"its old tip is pinned at {pin}" if moved.how == "rebased" else "nothing moved"
        raise WtrError(f"could not move stream '{name}' onto {target_name}: "
                       f"{result.stderr.strip()}; {kept}")


def _unblock(store: RunStore, name: str) -> None:
    """The progress a conflict marked blocked is cleared once the stream is in sync."""
    progress = store.progress(name) or {}
    if progress.get("blocked") and str(progress.get("message", "")).startswith(
            "sync conflicts"):
        write_json_atomic(store.progress_path(name), {
            "percent": progress.get("percent"), "blocked": False, "at": now(),
            "message": "in sync with the target again"})


class SyncConflict(Halted):
    def __init__(self, name: str, target_name: str, target: str, files: list[str],
                 hunks: str) -> None:
        super().__init__(
            f"sync halted: stream '{name}' conflicts with the target's tip "
            f"({target[:12]}) in {', '.join(files)}; nothing was changed",
            [f"  merge the target in its worktree (wtr path {name}): git merge {target[:12]}, "
             "resolve those files, git add, git commit; then sync again,",
             "  or go on without syncing (the merge will ask a human about these files)"])
        self.stream = name
        self.target_name = target_name
        self.target = target
        self.files = files
        self.hunks = hunks


def record_conflict(store: RunStore, error: SyncConflict) -> None:
    """Mark the stream blocked on the conflict, where status shows it."""
    earlier = synced_base(store, error.stream)
    write_json_atomic(sync_path(store, error.stream),
                      {"conflicted_files": error.files, "onto": error.target,
                       "target": error.target_name, "hunks": error.hunks, "at": now(),
                       **({"base_commit": earlier} if earlier else {})})
    write_json_atomic(store.progress_path(error.stream), {
        "percent": None, "blocked": True, "at": now(),
        "message": f"sync conflicts with the target in {', '.join(error.files)}"})
    store.event("stream_sync_conflict", stream=error.stream, files=error.files)


def conflict_hunks(repo: git.Repository, merged: git.TreeMerge, target_name: str) -> str:
    """The conflicting regions of each file as merging the target leaves them, with a few
    lines around each (``<<<<<<< your branch`` ... ``>>>>>>> <target>``)."""
    parts = []
    for path in merged.conflicts:
        data = git.blob_at(repo, merged.written, path) if merged.written else None
        text = data.decode("utf-8", "replace") if data is not None else ""
        blocks = _blocks(text.splitlines(), target_name)
        shown = "\n".join(blocks) if blocks else (
            "(not a conflict of lines: one side deleted, renamed or replaced it, or it is "
            f"not text; compare yours with git show {target_name}:{path})")
        parts.append(f"--- {path}\n{shown}")
    text = "\n".join(parts)
    if len(text) > HUNKS_CHARS:
        text = text[:HUNKS_CHARS] + "\n(cut short: git merge shows the rest)"
    return text


def _blocks(lines: list[str], target_name: str) -> list[str]:
    """Each conflict, relabelled, with CONTEXT_LINES lines before and after; close ones
    are joined."""
    spans: list[tuple[int, int]] = []
    start = None
    for index, line in enumerate(lines):
        if line.startswith(OURS_MARK) and start is None:
            start = index
        elif line.startswith(THEIRS_MARK) and start is not None:
            low, high = max(start - CONTEXT_LINES, 0), min(index + CONTEXT_LINES, len(lines) - 1)
            if spans and low <= spans[-1][1] + 1:
                spans[-1] = (spans[-1][0], high)
            else:
                spans.append((low, high))
            start = None
    shown = []
    for low, high in spans:
        shown += [f"@@ line {low + 1} @@",
                  *(_relabel(line, target_name) for line in lines[low:high + 1])]
    return shown


def _relabel(line: str, target_name: str) -> str:
    if line.startswith(OURS_MARK + " "):
        return f"{OURS_MARK} your branch"
    if line.startswith(THEIRS_MARK + " "):
        return f"{THEIRS_MARK} {target_name}"
    return line
