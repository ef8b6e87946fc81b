"""``wtr clean``: remove a run's worktrees and merged branches; never lose work.

A worktree with uncommitted or untracked changes is first saved as a commit under
``refs/worktree-runner/rescue/<run>/<stream>``. A branch is deleted only when its work
is in the target (by ancestry, by the landed merge, or patch by patch); others are kept
and listed, or with ``force`` pinned under ``refs/worktree-runner/archive/`` first.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from worktree_runner import git
from worktree_runner.errors import WtrError
from worktree_runner.merge.stage import INTEGRATION_DIR
from worktree_runner.run import registry
from worktree_runner.run.state import RunRecord, RunState, RunStore, Status, now


@dataclass
class CleanReport:
    run: str
    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    rescued: list[str] = field(default_factory=list)


def clean_run(repo: git.Repository, store: RunStore, dry_run: bool, force: bool) -> CleanReport:
    record = store.load()
    _refuse_active(store, record, force)
    report = CleanReport(store.run_id)
    registered = {w.path for w in git.list_worktrees(repo)}
    present = [(n, p) for n, p in _worktrees(record) if p in registered or p.exists()]

    def clear(item: tuple[str, Path]) -> tuple[str | None, str]:
        name, path = item
        rescued = _rescue(repo, store, name, path, dry_run)
        if not dry_run:
            git.remove_worktree(repo, path, prune=False)
        return rescued, f"{'would remove' if dry_run else 'removed'} worktree {path}"

    # Looking for uncommitted work reads every file of a worktree: one core each.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for rescued, done in pool.map(clear, present):
            report.rescued += [rescued] if rescued else []
            report.done.append(done)
    if not dry_run:
        repo.git("worktree", "prune")
    target_tip = git.ref_commit(repo, f"refs/heads/{record.target}")
    for stream in record.streams.values():
        _clean_branch(repo, store, record, stream.name, target_tip, dry_run, force, report)
    if not dry_run:
        merge = dict(record.merge)
        if merge.get("state") == "halted":
            merge.update(state="aborted", active=False, worktree=None)
        store.update_run("run_cleaned", cleaned_at=now(), merge=merge)
    return report


def _refuse_active(store: RunStore, record: RunRecord, force: bool) -> None:
    if registry.run_is_active(store):
        raise WtrError(f"run {store.run_id} is still active", hint="wait for it to finish")
    running = [s.name for s in record.streams.values() if s.status == Status.RUNNING.value]
    if running and record.state == RunState.RUNNING.value:
        raise WtrError(f"run {store.run_id} did not finish (running: {', '.join(running)})",
                       hint="'wtr resume' it first; its agents may still be working")
    if record.merge.get("state") == "halted" and not force:
        raise WtrError(f"the merge of run {store.run_id} is halted",
                       hint="'wtr merge --continue' or 'wtr merge --abort' first "
                            "(or 'wtr clean --force' to rescue and drop it)")


def _worktrees(record: RunRecord) -> list[tuple[str, Path]]:
    root = Path(record.worktrees_root) / record.run
    found = [(s.name, Path(s.worktree or root / s.name)) for s in record.streams.values()]
    return [*found, (INTEGRATION_DIR, root / INTEGRATION_DIR)]


def _rescue(repo: git.Repository, store: RunStore, name: str, path: Path,
            dry_run: bool) -> str | None:
    """Save the worktree's uncommitted work under a rescue ref; what was done, if anything."""
    if not path.exists() or not git.worktree_dirty(path):
        return None
    ref = f"refs/worktree-runner/rescue/{store.run_id}/{name}"
    if dry_run:
        return f"would save uncommitted changes of {path} to {ref}"
    commit = git.snapshot_worktree(repo, path, f"wtr clean: uncommitted work of {name}")
    git.update_ref(repo, ref, commit)
    return (f"saved uncommitted changes of {name} to {ref}; get them back with: "
            f"git checkout {ref} -- .  (or: git cherry-pick --no-commit {ref})")


def _clean_branch(repo: git.Repository, store: RunStore, record: RunRecord, name: str,
                  target_tip: str | None, dry_run: bool, force: bool,
                  report: CleanReport) -> None:
    stream = record.streams[name]
    head = git.ref_commit(repo, f"refs/heads/{stream.branch}")
    if head is None:
        return
    if target_tip and _contained(repo, record, name, head, target_tip):
        if not dry_run:
            git.delete_branch(repo, stream.branch, head)
        report.done.append(f"{'would delete' if dry_run else 'deleted'} branch {stream.branch} "
                           f"(its work is in {record.target})")
    elif force:
        archive = f"refs/worktree-runner/archive/{store.run_id}/{name}"
        if not dry_run:
            git.update_ref(repo, archive, head)
            git.delete_branch(repo, stream.branch, head)
        report.done.append(f"{'would delete' if dry_run else 'deleted'} unmerged branch "
                           f"{stream.branch}, its tip pinned at {archive}")
    else:
        report.kept.append(f"kept branch {stream.branch} ({stream.status}; its work is not in "
                           f"{record.target}; --force deletes it after pinning its tip)")


def _contained(repo: git.Repository, record: RunRecord, name: str, head: str,
               target_tip: str) -> bool:
    stream = record.streams[name]
    if git.is_ancestor(repo, head, target_tip):
        return True
    merge = record.merge
    landed = merge.get("landed_to")
    if (merge.get("state") == "landed" and name in merge.get("merged", []) and landed
            and git.is_ancestor(repo, landed, target_tip)):
        return True
    base = stream.base_commit
    return bool(base) and not git.unique_commits(repo, target_tip, head, base or "")
