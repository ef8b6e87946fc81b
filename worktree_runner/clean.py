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

from worktree_runner import git, procs
from worktree_runner.errors import WtrError
from worktree_runner.merge.stage import INTEGRATION_DIR
from worktree_runner.run import registry
from worktree_runner.run.state import RunRecord, RunState, RunStore, Status, StreamRecord, now
from worktree_runner.run.stream import compose_project_name


@dataclass
class CleanReport:
    run: str
    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    rescued: list[str] = field(default_factory=list)


def clean_run(repo: git.Repository, store: RunStore, dry_run: bool, force: bool,
              remote: bool = False) -> CleanReport:
    record = store.load()
    teardown = _teardown_commands(store)
    _refuse_active(store, record, force)
    report = CleanReport(store.run_id)
    registered = {w.path for w in git.list_worktrees(repo)}
    present = [(n, p) for n, p in _worktrees(record) if p in registered or p.exists()]

    def clear(item: tuple[str, Path]) -> tuple[str | None, str]:
        name, path = item
        rescued = _rescue(repo, store, name, path, dry_run)
        done = f"{'would remove' if dry_run else 'removed'} worktree {path}"
        if not dry_run:
            done += _teardown(store, name, path, teardown)
            git.remove_worktree(repo, path, prune=False)
        return rescued, done

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
    if remote:
        _clean_remote_branches(repo, store, dry_run, report)
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
    if not base:
        return False
    if not git.unique_commits(repo, target_tip, head, base):
        return True
    return git.holds_changes(repo, base, head, target_tip) or _pr_merged(repo, stream, head)


def _pr_merged(repo: git.Repository, stream: StreamRecord, head: str) -> bool:
    """The stream's pull request is merged on its forge and holds every commit of the branch
    (what we pushed is the branch's tip): its work is in the target there, however merged.
    No forge CLI, no login, no answer: not proven, the branch is kept."""
    pr, pushed = stream.pr or {}, stream.pushed or {}
    if not pr or pushed.get("commit") != head:
        return False
    from worktree_runner.forge import forge_for

    try:
        url = git.remote_url(repo, pushed["remote"])
        forge = forge_for(pr.get("forge"), pushed["remote"], url, repo.root)
        found = forge.find(stream.branch)
    except WtrError:
        return False
    return found is not None and found.state == "merged" and found.number == pr.get("number")


def _clean_remote_branches(repo: git.Repository, store: RunStore, dry_run: bool,
                           report: CleanReport) -> None:
    """Delete the pushed branches of streams whose local branch is gone (their work is in the
    target), each only if the remote still holds what this run pushed."""
    for stream in store.record.streams.values():
        pushed = stream.pushed
        if not pushed or git.ref_commit(repo, f"refs/heads/{stream.branch}") is not None:
            continue
        where = f"{pushed['remote']}/{pushed['branch']}"
        if dry_run:
            report.done.append(f"would delete remote branch {where}")
            continue
        result = git.push_branch(repo, pushed["remote"], pushed["branch"], None, pushed["commit"])
        if result.ok:
            store.update_stream(stream.name, "remote_branch_deleted", pushed=None)
            report.done.append(f"deleted remote branch {where}")
        else:
            report.kept.append(f"kept remote branch {where} (it moved since this run pushed it, "
                               "or the remote refused)")


def _teardown_commands(store: RunStore) -> tuple[str, ...]:
    from worktree_runner.run.runner import load_run_plan

    try:
        return load_run_plan(store).teardown
    except (OSError, WtrError):
        return ()


def _teardown(store: RunStore, name: str, path: Path, commands: tuple[str, ...]) -> str:
    """Run the plan's teardown commands in a stream's worktree before it goes (after its work
    was saved); a failure is reported, never a reason to keep or lose anything."""
    if name == INTEGRATION_DIR or not path.exists():
        return ""
    env = procs.child_env({"WTR_RUN": store.run_id, "WTR_STREAM": name,
                           "WTR_WORKTREE": str(path),
                           "COMPOSE_PROJECT_NAME": compose_project_name(store.run_id, name)})
    failed = [f"{command!r} (exit {code})" for command in commands
              if (code := procs.run_logged(command, path, env, store.log_path(name))) != 0]
    if failed:
        store.event("teardown_failed", stream=name, commands=failed)
        return f"; teardown failed: {', '.join(failed)} (see 'wtr logs {name}')"
    return "; teardown ran" if commands else ""
