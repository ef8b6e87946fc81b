"""The worktree pool: ``wtr clean`` keeps clean worktrees, the next run's streams take them.

A pooled worktree lives at ``<worktrees root>/.pool/<slot>``: registered with git,
detached, with no uncommitted change and no untracked file, and nothing of its own: no
``config.worktree``, no ``refs/worktree/*``, no index flag hiding a file (stripped when it is
given back and again when it is taken). A stream takes one by
renaming it to its own path (``git worktree move``), removing ignored files outside the
plan's ``keep_ignored`` (warm build caches such as ``node_modules/`` stay) and checking
out its base commit from there, which writes only the files that differ: on a large
repository that is most of the cost of a launch saved, and the kept caches come along.
Clean stays cheap: giving a worktree back is a rename, with no walk of its files beyond
the look for uncommitted work that clean does anyway.

Each hand-over is a rename done under the pool's file lock, so two runs never take the
same slot and the pool never grows past its size. Killed at any moment, a worktree is in
the pool or at a stream's path, where ``take`` (on resume) or ``give_back`` (on the next
clean) picks it up; a slot folder git lost track of is repaired or removed. A worktree is
proven clean before reuse; one that is not is saved under a rescue ref and removed,
never reused. Sparse worktrees are not pooled (removing them is cheap).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from worktree_runner import faults, git, rescue
from worktree_runner.errors import GitFailed, WtrError
from worktree_runner.plan.model import POOL_PER_AGENT
from worktree_runner.plan.patterns import compile_patterns

POOL_DIR = ".pool"
# Files in a worktree's git dir that say an operation is under way: not a clean worktree.
_IN_PROGRESS = ("rebase-merge", "rebase-apply", "MERGE_HEAD", "CHERRY_PICK_HEAD",
                "REVERT_HEAD", "BISECT_LOG", "sequencer", "info/sparse-checkout")
_THREAD_LOCK = threading.Lock()


def is_pooled(path: Path) -> bool:
    return path.parent.name == POOL_DIR


@dataclass
class Pool:
    """The pool of one worktrees folder, as a plan's ``pool`` and ``keep_ignored`` set it."""

    repo: git.Repository
    worktrees_root: Path
    size: int
    keep_ignored: tuple[str, ...] = ()
    note: Callable[[str], None] = field(default=lambda message: None)

    @property
    def folder(self) -> Path:
        return self.worktrees_root / POOL_DIR

    # -- taking ------------------------------------------------------------------------

    def take(self, path: Path, branch: str, base: str, stream: str) -> bool:
        """Give ``path`` a pooled worktree on a new ``branch`` at ``base``; False if the pool
        has none fit for reuse (then nothing was created and the branch does not exist)."""
        if self.size == 0 or not (self.folder.is_dir() or path.exists()):
            return False  # (nothing pooled: not even a look at git's worktree list)
        while self._claim(path, base):
            faults.point("pool_claimed", stream)
            fit = self._reusable(path)
            if fit is not None:
                head, strays = fit
                try:
                    self._switch(path, branch, head, base, strays)
                    return True
                except GitFailed as exc:
                    self.note(f"a pooled worktree could not be moved to {base[:12]} "
                              f"({exc.message}); removed it")
                    if git.ref_commit(self.repo, f"refs/heads/{branch}") == base:
                        git.delete_branch(self.repo, branch, base)
            self.discard(path)
        return False

    def _claim(self, path: Path, base: str) -> bool:
        """Move a pooled worktree to ``path`` (preferring one already at ``base``); True if
        ``path`` now holds one, including one a killed hand-over left there."""
        if path.exists():
            return self._reclaim(path)
        # The claim is a rename under the pool's lock: no git process, so streams starting
        # together wait for each other only that long.
        with self._locked():
            slots = self._free_slots()
            for slot in sorted(slots, key=lambda slot: slots[slot] != base):
                if git.rename_worktree(slot, path):
                    return True
                # Locked, with submodules, or not where git has it: git's own move decides.
                with git.repository_lock(self.repo):
                    if any(w.path == slot for w in git.list_worktrees(self.repo)):
                        git.move_worktree(self.repo, slot, path, locked=True)
                        return True
                # (a slot folder git lost track of: ``tidy`` sees to it)
        return False

    def _free_slots(self) -> dict[Path, str | None]:
        """The pool's worktree folders, each with the commit it is detached at (from files)."""
        if not self.folder.is_dir():
            return {}
        slots = {}
        for entry in sorted(self.folder.iterdir()):
            admin = git.linked_git_dir(entry)
            if admin is not None:
                slots[entry] = git.detached_at(admin)
        return slots

    def _reclaim(self, path: Path) -> bool:
        """A worktree a killed hand-over left at ``path``: registered there again if git
        lost track of it (True), else False."""
        with self._locked(), git.repository_lock(self.repo):
            git.run_git(["worktree", "repair", str(path)], self.repo.root, check=False)
            return any(w.path == path for w in git.list_worktrees(self.repo))

    def _reusable(self, path: Path) -> tuple[str, list[str]] | None:
        """The commit the worktree is detached at and the ignored files to remove before
        reuse (those outside ``keep_ignored``), or None if it is not fit: not detached, an
        operation under way, a changed tracked file or an untracked file (someone worked
        in the pool)."""
        admin = git.linked_git_dir(path)
        head = git.detached_at(admin) if admin is not None else None
        if admin is None or head is None or not git.dot_git_intact(path):
            return None
        if _busy(admin):
            return None
        git.strip_worktree(path)  # (a file it hid shows as changed now: not fit)
        entries = _status(path)
        if any(code != "!!" for code, _ in entries):
            return None
        keep = compile_patterns(self.keep_ignored)
        return head, [name for _, name in entries if not keep.match_file(name)]

    def _switch(self, path: Path, branch: str, old: str, base: str, strays: list[str]) -> None:
        if strays:
            git.run_git(["--literal-pathspecs", "clean", "-ffdxq", "--", *strays], path)
        git.switch_worktree(path, branch, old, base)
        self._drop_unignored(path, old, base)

    def _drop_unignored(self, path: Path, old: str, new: str) -> None:
        """Kept caches stay only while ignored: if the ignore rules changed between the two
        commits, what they no longer ignore goes (else it would reach an agent's commit)."""
        if not self.keep_ignored or old == new:
            return  # (without kept caches, every ignored file goes before a stream starts)
        # (No pathspec: diff-tree then reads only the trees that differ.)
        changed = git.run_git(["diff-tree", "-r", "--name-only", "-z", old, new], path).stdout
        if any(name.rsplit("/", 1)[-1] == ".gitignore" for name in changed.split("\0")):
            git.run_git(["clean", "-ffdq"], path)

    # -- giving back -------------------------------------------------------------------

    def give_back(self, path: Path, stream: str, dirty: bool = True,
                  ready_at: str | None = None) -> bool:
        """Put a worktree whose uncommitted work was already saved into the pool: tracked
        changes and untracked files gone, detached (at ``ready_at`` when given: the commit
        the next run most likely starts from, the target's tip, so that its stream has no
        file to write). Ignored files stay until a stream takes it (only then is the
        folder walked for them). ``dirty`` False: the caller has just seen it without a
        change or untracked file (no second look). False when it is not one to keep (pool
        full or off, sparse, an operation under way): the caller removes it."""
        if self.size == 0 or is_pooled(path) or not path.exists():
            return False
        head = self._poolable(path)
        if head is None:
            return False
        hidden = git.strip_worktree(path)
        if (dirty or hidden) and git.worktree_dirty(path):
            git.run_git(["reset", "--quiet", "--hard"], path)
            git.run_git(["clean", "-ffdq"], path)
        git.run_git(["update-ref", "--no-deref", "-m", "wtr: pooled", "HEAD", head], path)
        if ready_at is not None and ready_at != head and git.run_git(
                ["read-tree", "-m", "-u", head, ready_at], path, check=False).ok:
            # (killed before the next line, the pool sees a staged change: it saves and
            # removes the worktree instead of reusing it)
            git.run_git(["update-ref", "--no-deref", "-m", "wtr: pooled", "HEAD", ready_at,
                         head], path)
            self._drop_unignored(path, head, ready_at)
        faults.point("pool_returning", stream)
        with self._locked():
            slots = [p for p in self.folder.iterdir() if p.is_dir()] if (
                self.folder.is_dir()) else []
            if len(slots) >= self.size:
                return False
            slot = self.folder / f"{stream}.{uuid.uuid4().hex[:8]}"
            if not git.rename_worktree(path, slot):
                git.move_worktree(self.repo, path, slot)
        return True

    def _poolable(self, path: Path) -> str | None:
        """The worktree's HEAD commit, if it is one to pool (no operation under way, its
        ``.git`` as git wrote it, not locked: an overlay worktree is, and is never pooled)."""
        admin = git.linked_git_dir(path)
        if admin is None or (admin / "locked").exists() or not git.dot_git_intact(path):
            return None
        found = git.run_git(["rev-parse", "--absolute-git-dir", "HEAD"], path, check=False)
        lines = found.stdout.split()
        if not found.ok or len(lines) != 2:
            return None
        if _busy(Path(lines[0])):
            return None
        return lines[1]

    # -- emptying ----------------------------------------------------------------------

    def tidy(self) -> None:
        """Repair slot folders a killed move left unknown to git; remove what cannot be."""
        if not self.folder.is_dir():
            return
        with self._locked(), git.repository_lock(self.repo):
            known = {w.path for w in git.list_worktrees(self.repo)}
            lost = [p for p in self.folder.iterdir() if p.is_dir() and p not in known]
            for slot in lost:
                git.run_git(["worktree", "repair", str(slot)], self.repo.root, check=False)
            known = {w.path for w in git.list_worktrees(self.repo)}
            lost = [slot for slot in lost if slot not in known]
        for slot in lost:
            git.remove_worktree(self.repo, slot, prune=False)

    def discard(self, path: Path) -> str | None:
        """Remove a pooled (or half handed-over) worktree; anything uncommitted in it, and
        any commit its HEAD once pointed at that nothing else holds (its reflog goes with
        it), is saved under a rescue ref first. Returns the uncommitted work's ref, if any."""
        for hidden in rescue.pin_hidden(self.repo, "pool", path.name, git.reflog(path, "HEAD")):
            self.note(f"saved a commit found in pooled worktree {path}, which no branch "
                      f"holds, to {hidden}")
        ref = None
        try:
            commit = git.snapshot_worktree(self.repo, path, "wtr: uncommitted work found in "
                                           f"pooled {path}") if git.worktree_dirty(path) else None
            if commit is not None:
                ref = f"refs/worktree-runner/rescue/pool/{time.time_ns()}-{path.name}"
                git.create_ref(self.repo, ref, commit)
                self.note(f"saved what was left in pooled worktree {path} to {ref}")
        except WtrError:  # no HEAD to build on: a broken worktree, nothing to rescue from
            ref = None
        git.remove_worktree(self.repo, path, prune=False)
        return ref

    def _slots(self) -> list[Path]:
        return [w.path for w in git.list_worktrees(self.repo) if w.path.parent == self.folder]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.repo.state_dir.mkdir(parents=True, exist_ok=True)
        with _THREAD_LOCK, FileLock(str(self.repo.state_dir / "pool.lock")):
            yield


def _busy(git_dir: Path) -> bool:
    """Whether an operation (rebase, merge, bisect...) is under way in the worktree."""
    return any((git_dir / name).exists() for name in _IN_PROGRESS)


def _status(path: Path) -> list[tuple[str, str]]:
    """``(code, path)`` of every change, untracked and ignored path; ignored folders are
    listed, not entered (a kept ``node_modules/`` costs one entry)."""
    out = git.run_git(["status", "--porcelain", "-z", "--no-renames", "--ignored=matching",
                       "--untracked-files=normal"], path).stdout
    return [(entry[:2], entry[3:]) for entry in out.split("\0") if len(entry) > 3]


def for_run(repo: git.Repository, plan_text: str, plan_path: Path, worktrees_root: Path,
            max_parallel: int) -> Pool:
    """The pool as the plan a run started with sets it (the default pool if it is unreadable)."""
    from worktree_runner.plan.load import parse_plan

    try:
        plan = parse_plan(plan_text, plan_path)
    except WtrError:
        return Pool(repo, worktrees_root, POOL_PER_AGENT * max_parallel)
    return Pool(repo, worktrees_root, plan.pool_size(max_parallel), plan.keep_ignored)


def pooled_worktrees(repo: git.Repository) -> list[Path]:
    """Every pooled worktree of the repository, whatever worktrees folder holds it."""
    return [w.path for w in git.list_worktrees(repo) if is_pooled(w.path)]


def empty(repo: git.Repository, dry_run: bool) -> list[str]:
    """Remove every pooled worktree (``wtr clean --pool``); what was done, one line each."""
    from worktree_runner.run import registry

    roots = []
    for store in registry.list_runs(repo):
        with contextlib.suppress(WtrError):
            roots.append(Path(store.load().worktrees_root))
    done: list[str] = []
    for root in dict.fromkeys([*roots, *(p.parent.parent for p in pooled_worktrees(repo))]):
        pool = Pool(repo, root, size=0, note=done.append)
        if not dry_run:
            pool.tidy()
        for path in pool._slots():
            if not dry_run:
                pool.discard(path)
            done.append(f"{'would remove' if dry_run else 'removed'} pooled worktree {path}")
    if not dry_run:
        repo.git("worktree", "prune")
    return done
