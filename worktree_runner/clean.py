"""``wtr clean``: remove a run's worktrees and merged branches; never lose work.

Before a worktree is removed, its uncommitted work is saved as a commit under
``refs/worktree-runner/rescue/<run>/<stream>`` (a later save never overwrites an earlier
one: it becomes ``<stream>@2``, ``@3``...), and commits the agent made and then hid
(detached HEAD, reset, amend, a deleted branch) that no branch, tag or rescue ref holds
are saved as ``<stream>@commit-<id>``. Files brought in by ``copy`` are never saved.
A branch is deleted only when the target's tree is proven to hold its net change; if the
target holds only a copy of its commits (rebased, squashed), its tip is first pinned under
``refs/worktree-runner/archive/`` (never overwritten). Others are kept and listed, or with
``force`` pinned there too. Only worktrees of this repository are ever removed.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from worktree_runner import checkout, faults, git, pool, procs, rescue
from worktree_runner.errors import WtrError
from worktree_runner.merge.stage import INTEGRATION_DIR
from worktree_runner.rescue import RESCUE_PREFIX
from worktree_runner.run import registry
from worktree_runner.run.state import RunRecord, RunState, RunStore, Status, StreamRecord, now


@dataclass
class CleanReport:
    run: str
    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    rescued: list[str] = field(default_factory=list)


def clean_run(repo: git.Repository, store: RunStore, dry_run: bool, force: bool,
              remote: bool = False) -> CleanReport:
    """Clean one run, holding its lock: no other wtr writes its state meanwhile."""
    with registry.hold_run(store):
        return _clean(repo, store, dry_run, force, remote)


def _clean(repo: git.Repository, store: RunStore, dry_run: bool, force: bool,
           remote: bool) -> CleanReport:
    record = store.record
    teardown = _teardown_commands(store)
    _refuse_active(store, record, force)
    report = CleanReport(store.run_id)
    worktrees = _worktrees(record)
    keeper = _pool(repo, store, record)
    if not dry_run:
        # Nothing of a finished run may still run: what a killed runner and supervisor
        # left behind is found by the run named in its environment.
        strays = procs.end_tagged(store.dir)
        if strays:
            report.done.append(f"stopped {strays} process{'' if strays == 1 else 'es'} the "
                               "run's agents had left running")
        # a clean killed earlier may have left git's own locks behind
        git.clear_stale_locks(repo, [f"refs/heads/wtr/{record.run}", "refs/worktree-runner"],
                              [path for _, path in worktrees])
        keeper.tidy()
    ours = _our_worktrees(repo, worktrees, report)
    target_tip = git.ref_commit(repo, f"refs/heads/{record.target}")

    def clear(item: tuple[str, Path]) -> tuple[list[str], str]:
        name, path = item
        half_removed = git.removal_started(repo, path)
        if not half_removed:  # (an overlay whose mount is down: its work is in its
            checkout.remount(repo, path)  # layer, seen through the mount; even a dry run)
        dirty = [] if half_removed else git.worktree_dirty(
            path, checkout.suspects(repo, path))
        rescued = [] if half_removed else _rescue_worktree(repo, store, name, path, dry_run,
                                                           dirty)
        faults.point("clean_rescued", name)
        if dry_run:
            return rescued, f"would remove worktree {path} (or keep it in the pool)"
        stream = None if name == INTEGRATION_DIR else name
        if rescued:
            store.event("clean.rescued", stream=stream, worktree=str(path), saved=rescued)
        torn = _teardown(store, name, path, teardown)
        # (nothing of the run runs any more: only a teardown command can have changed it)
        if not half_removed and keeper.give_back(path, name, dirty=bool(dirty or teardown),
                                                 ready_at=target_tip):
            store.event("clean.removed", stream=stream, worktree=str(path), pooled=True)
            return rescued, f"kept worktree {path} in the pool for the next run{torn}"
        git.mark_removing(repo, path)
        git.remove_worktree(repo, path, prune=False)
        store.event("clean.removed", stream=stream, worktree=str(path), pooled=False)
        return rescued, f"removed worktree {path}{torn}"

    # Looking for uncommitted work reads every file of a worktree: one core each.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for rescued, done in pool.map(clear, ours):
            report.rescued += rescued
            report.done.append(done)
    if not dry_run:
        repo.git("worktree", "prune")
        checkout.sweep(repo, Path(record.worktrees_root), record.run)
        if (Path(record.worktrees_root) / checkout.BASE_DIR).is_dir():
            checkout.prune_bases(Path(record.worktrees_root), _bases_in_use(repo, record.run))
        _remove_empty_run_folder(record)
    faults.point("clean_branches", "")
    target_tip = git.ref_commit(repo, f"refs/heads/{record.target}")  # (may have moved)

    def branch(name: str) -> CleanReport:
        own = CleanReport(store.run_id)
        _clean_branch(repo, store, record, name, target_tip, dry_run, force, own)
        if own.done and not dry_run:
            store.event("clean.removed", stream=name, branch=record.streams[name].branch,
                        detail=own.done[-1])
        return own

    # Each branch is its own proof and its own compare-and-swap delete: in parallel,
    # reported in the plan's order.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for own in pool.map(branch, list(record.streams)):
            report.done += own.done
            report.kept += own.kept
    for stream in record.streams.values():
        _clean_candidate_branches(repo, store, stream, dry_run, force, report)
    if remote:
        _clean_remote_branches(repo, store, dry_run, report)
    if not dry_run:
        from worktree_runner.merge.queue import MergeQueue

        queue = MergeQueue.from_json(record.merge, record.target)
        queue.abandon_open("dropped by 'wtr clean' (its worktree removed)")
        store.update_run("run_cleaned", cleaned_at=now(), merge=queue.to_json())
    return report


def _pool(repo: git.Repository, store: RunStore, record: RunRecord) -> pool.Pool:
    text = store.plan_path.read_text(encoding="utf-8") if store.plan_path.exists() else ""
    return pool.for_run(repo, text, Path(record.plan), Path(record.worktrees_root),
                        record.max_parallel)


def _refuse_active(store: RunStore, record: RunRecord, force: bool) -> None:
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
    # best-of-N candidates not kept (the kept one's worktree is its stream's)
    others = [(s.name, Path(c["worktree"])) for s in record.streams.values()
              for c in s.candidates if c.get("worktree") and c["worktree"] != s.worktree]
    return [*found, *others, (INTEGRATION_DIR, root / INTEGRATION_DIR)]


def _our_worktrees(repo: git.Repository, worktrees: list[tuple[str, Path]],
                   report: CleanReport) -> list[tuple[str, Path]]:
    """The run's worktree paths that are worktrees of this repository; anything else at
    such a path (another repository's worktree, a folder made by hand) is left alone."""
    ours = []
    for name, path in worktrees:
        if not path.exists():
            continue
        if git.owns_worktree(repo, path):
            ours.append((name, path))
        else:
            report.kept.append(f"left {path} alone: it is not a worktree of this repository")
    return ours


def _bases_in_use(repo: git.Repository, cleaned: str) -> set[str]:
    """The base commits of the runs still running, but ``cleaned`` (a shared checkout
    removed under a run that later needs it is made again)."""
    used = set()
    for other in registry.list_runs(repo):
        with contextlib.suppress(WtrError, ValueError, OSError):
            record = other.load()
            if record.run != cleaned and record.state == RunState.RUNNING.value:
                used.add(record.base_commit)
    return used


def _remove_empty_run_folder(record: RunRecord) -> None:
    folder = Path(record.worktrees_root) / record.run
    # Not empty (something not ours is in it), or already gone: leave it.
    with contextlib.suppress(OSError):
        folder.rmdir()


# -- saving work before a worktree goes --------------------------------------------------


def _rescue_worktree(repo: git.Repository, store: RunStore, name: str, path: Path,
                     dry_run: bool, dirty: list[str]) -> list[str]:
    """Save what only the worktree holds; ``dirty``: its uncommitted paths."""
    lines = [] if name == INTEGRATION_DIR else _rescue_hidden_commits(
        repo, store, name, path, dry_run)
    uncommitted = _rescue_uncommitted(repo, store, name, path, dry_run, dirty)
    return [*lines, *([uncommitted] if uncommitted else [])]


def _rescue_uncommitted(repo: git.Repository, store: RunStore, name: str, path: Path,
                        dry_run: bool, uncommitted: list[str]) -> str | None:
    """Save the worktree's uncommitted work (not files brought in by ``copy``) under a new
    rescue ref; what was done, if anything."""
    copied = store.record.copied
    dirty = [p for p in uncommitted if p not in copied]
    if not dirty:
        return None
    if dry_run:
        return (f"would save uncommitted changes of {name} ({_files(len(dirty))}) under "
                f"{RESCUE_PREFIX}/{store.run_id}/{name}")
    commit = git.snapshot_worktree(repo, path, f"wtr clean: uncommitted work of {name}",
                                   exclude=copied)
    if commit is None:
        return None
    ref, new = rescue.save_uncommitted(repo, store.run_id, name, commit)
    saved = "saved" if new else "already saved"
    return (f"{saved} uncommitted changes of {name} ({_files(len(dirty))}) to {ref}; "
            f"get exactly those changes back in a checkout with: "
            f"git cherry-pick --no-commit {ref}")


def _rescue_hidden_commits(repo: git.Repository, store: RunStore, name: str, path: Path,
                           dry_run: bool) -> list[str]:
    """Save commits the worktree's HEAD or its stream branch once pointed at that no branch,
    tag or rescue ref holds any more (detached work, resets, amends, deleted branches)."""
    stream = store.record.streams.get(name)
    candidates = git.reflog(path, "HEAD")
    if stream is not None:
        candidates += git.reflog(path, f"refs/heads/{stream.branch}")
    if dry_run:
        lost = git.unreachable_tips(repo, list(dict.fromkeys(candidates)))
        return [f"would save commit {tip[:12]} of {name}, which no branch holds any more"
                for tip in lost]
    return [f"saved a commit of {name}, which no branch holds any more, to {ref}; "
            f"see it with: git log {ref}"
            for ref in rescue.pin_hidden(repo, store.run_id, name, candidates)]


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


# -- branches --------------------------------------------------------------------------------


def _clean_branch(repo: git.Repository, store: RunStore, record: RunRecord, name: str,
                  target_tip: str | None, dry_run: bool, force: bool,
                  report: CleanReport) -> None:
    stream = record.streams[name]
    head = git.ref_commit(repo, f"refs/heads/{stream.branch}")
    if head is None:
        return
    verb = "would delete" if dry_run else "deleted"
    if stream.base_commit and git.tree_of(repo, head) == git.tree_of(repo, stream.base_commit):
        if not dry_run:
            _delete_branch(repo, stream.branch, head)
        report.done.append(f"{verb} branch {stream.branch} (no work: nothing changed "
                           f"since its base)")
    elif target_tip and git.is_ancestor(repo, head, target_tip):
        if not dry_run:
            _delete_branch(repo, stream.branch, head)
        report.done.append(f"{verb} branch {stream.branch} (its work is in {record.target})")
    elif target_tip and _work_in_target(repo, record, name, head, target_tip):
        # The target holds a copy (rebased, squashed): the agent's own commits are kept.
        archive = _archive(repo, store.run_id, name, stream.branch, head, dry_run)
        report.done.append(f"{verb} branch {stream.branch} (its work is in {record.target}; "
                           f"its original commits pinned at {archive})")
    elif force:
        archive = _archive(repo, store.run_id, name, stream.branch, head, dry_run)
        report.done.append(f"{verb} unmerged branch {stream.branch}, its tip pinned at {archive}")
    elif stream.status == Status.MERGED.value:
        report.kept.append(f"kept branch {stream.branch} (merged, but {record.target} does not "
                           "hold its exact changes: a conflict was resolved by hand, or they "
                           "were changed since; --force deletes it after pinning its tip)")
    else:
        report.kept.append(f"kept branch {stream.branch} ({stream.status}; its work is not in "
                           f"{record.target}; --force deletes it after pinning its tip)")


def _clean_candidate_branches(repo: git.Repository, store: RunStore, stream: StreamRecord,
                              dry_run: bool, force: bool, report: CleanReport) -> None:
    """A best-of-N stream's candidates not kept: pinned under the archive refs (when the
    run chose, or now), then their branches go. When none was kept (the stream failed),
    they are kept like a failed stream's branch, unless ``force``."""
    kept = any(c.get("chosen") for c in stream.candidates)
    verb = "would delete" if dry_run else "deleted"
    for entry in stream.candidates:
        branch = entry["branch"]
        head = git.ref_commit(repo, f"refs/heads/{branch}")
        if head is None or entry.get("chosen"):
            continue
        which = f"candidate {entry['attempt']} of {stream.name}"
        if not (kept or force):
            report.kept.append(f"kept branch {branch} ({which}; no candidate was kept; "
                               "--force deletes it after pinning its tip)")
            continue
        archived = entry.get("archive")
        if archived and git.ref_commit(repo, archived) == head:
            if not dry_run:
                _delete_branch(repo, branch, head)
        else:
            archived = _archive(repo, store.run_id, branch.rsplit("/", 1)[-1], branch, head,
                                dry_run)
        report.done.append(f"{verb} branch {branch} ({which}, not kept; its tip pinned at "
                           f"{archived})")


def _archive(repo: git.Repository, run: str, name: str, branch: str, head: str,
             dry_run: bool) -> str:
    """Pin ``head`` under an archive ref that is never overwritten, then delete the branch;
    the ref's name."""
    if dry_run:
        return rescue.archive_name(run, name)
    ref = rescue.pin_archive(repo, run, name, head)
    _delete_branch(repo, branch, head)
    return ref


def _delete_branch(repo: git.Repository, branch: str, head: str) -> None:
    if not git.delete_branch(repo, branch, head):
        raise WtrError(f"could not delete branch {branch} (it moved, or git holds a lock on it)",
                       hint="run 'wtr clean' again")


def _work_in_target(repo: git.Repository, record: RunRecord, name: str, head: str,
                    target_tip: str) -> bool:
    """Proven, not assumed from the merge's record: the target's tree holds the stream's
    net change (base -> head) for every file, or its merged pull request holds the branch."""
    stream = record.streams[name]
    base = stream.base_commit
    if not base:
        return False
    return git.contains_change(repo, target_tip, base, head) or _pr_merged(repo, stream, head)


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
    from worktree_runner.run.stream import compose_project_name  # the runner, only if needed

    env = procs.child_env({"WTR_RUN": store.run_id, "WTR_STREAM": name,
                           "WTR_WORKTREE": str(path),
                           "COMPOSE_PROJECT_NAME": compose_project_name(store.run_id, name)})
    failed = [f"{command!r} (exit {code})" for command in commands
              if (code := procs.run_logged(command, path, env, store.log_path(name))) != 0]
    if failed:
        store.event("teardown_failed", stream=name, commands=failed)
        return f"; teardown failed: {', '.join(failed)} (see 'wtr logs {name}')"
    return "; teardown ran" if commands else ""
