"""A stream's worktree: created, filled, moved, switched, stripped, snapshotted and
removed; and git's own lock files that a killed command leaves in the shared repository."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worktree_runner import faults, logs
from worktree_runner.errors import WtrError
from worktree_runner.files import write_text_atomic
from worktree_runner.git.door import (
    Repository,
    identity_env,
    registration,
    repository_lock,
    retry_on_lock,
    run_git,
)
from worktree_runner.git.refs import commit_tree, head_of, tree_of
from worktree_runner.git.status import index_file, unhide, worktree_dirty
from worktree_runner.overlay import drop, layers_of, unmount


@dataclass(frozen=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None  # short name, without refs/heads/
    bare: bool = False
    detached: bool = False
    locked: bool = False
    prunable: bool = False


def parse_worktree_porcelain(text: str) -> list[Worktree]:
    """Parse ``git worktree list --porcelain`` output (records separated by blank lines)."""
    worktrees: list[Worktree] = []
    for record in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in record.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "worktree" not in fields:
            continue
        branch = fields.get("branch")
        worktrees.append(
            Worktree(
                path=Path(fields["worktree"]),
                head=fields.get("HEAD"),
                branch=branch.removeprefix("refs/heads/") if branch else None,
                bare="bare" in fields,
                detached="detached" in fields,
                locked="locked" in fields,
                prunable="prunable" in fields,
            )
        )
    return worktrees


def list_worktrees(repo: Repository) -> list[Worktree]:
    return parse_worktree_porcelain(repo.out("worktree", "list", "--porcelain"))


def worktree_of_branch(repo: Repository, branch: str) -> Worktree | None:
    return next((w for w in list_worktrees(repo) if w.branch == branch), None)


@retry_on_lock
def add_worktree(repo: Repository, path: Path, branch: str, commit: str | None) -> None:
    """Register an empty worktree at ``path`` on ``branch``, created at ``commit`` if given.

    Only this step takes the repository lock; ``populate_worktree`` fills it afterwards.
    """
    refuse_occupied(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    where = ["-b", branch, str(path), commit] if commit else [str(path), branch]
    with repository_lock(repo):
        repo.git("worktree", "add", "--quiet", "--no-checkout", *where)


def refuse_occupied(path: Path) -> None:
    """A new worktree never goes over something that is already there."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise WtrError(f"cannot create a worktree at {path}: something is already there "
                       "(another repository's worktree, or files left by hand)",
                       hint="move it away, or point 'worktrees_dir' elsewhere")


# Checkouts write many files: more of them at once than there are cores only makes
# each slower (seen: 20 parallel checkouts of 2,000 files, 16 s each on 2 cores).
_CHECKOUTS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


def populate_worktree(path: Path) -> None:
    """Check out a worktree registered with --no-checkout; its own index only, so no lock."""
    admin = linked_git_dir(path)
    index = admin / "index" if admin is not None else (
        path / run_git(["rev-parse", "--git-path", "index"], path).stdout.strip())
    if not index.exists():
        with _CHECKOUTS:
            run_git(["reset", "--quiet", "--hard"], path)
            _settle_index(path)


def _settle_index(path: Path) -> None:
    """Make a fresh checkout's index trustworthy by its timestamps.

    git trusts a file's recorded size and mtime only when the file is older than the index
    (to the second); files written in the index's own second are "racy" and every later
    command (the agent's ``git add`` and ``commit``, the checks after it) reads and hashes
    them all again, until an index is written in a later second. Backdating the files just
    checked out by two seconds and refreshing once settles that. A file changed afterwards
    gets a new mtime, so nothing is hidden: the refresh itself compares every file's
    content before it records the new times."""
    backdate_files(path)
    run_git(["update-index", "-q", "--refresh"], path, check=False)


def backdate_files(path: Path) -> None:
    """Set the times of every file below ``path`` two seconds back (see ``_settle_index``)."""
    folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _backdate(folder, time.time_ns() - 2_000_000_000)
    finally:
        os.close(folder)


def _backdate(folder: int, then: int) -> None:
    """Set the times of every file below ``folder`` (links themselves, not what they point
    at) to ``then``; never inside git's own files nor a nested repository."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == ".git":
                continue
            if not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):  # (gone meanwhile: nothing to settle)
                    os.utime(entry.name, ns=(then, then), dir_fd=folder, follow_symlinks=False)
                continue
            try:
                below = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                dir_fd=folder)
            except OSError:  # unreadable, or gone: left as it is
                continue
            try:
                if not _holds_git(below):
                    _backdate(below, then)
            finally:
                os.close(below)


def _holds_git(folder: int) -> bool:
    try:
        os.stat(".git", dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


@retry_on_lock
def move_worktree(repo: Repository, source: Path, target: Path, locked: bool = False) -> None:
    """Move a registered worktree (a rename: no file is rewritten); ``locked``: the caller
    holds the repository lock already."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if locked else repository_lock(repo):
        repo.git("worktree", "move", str(source), str(target))


def linked_git_dir(worktree: Path) -> Path | None:
    """A linked worktree's metadata folder, read from its ``.git`` file without a git
    process; None when there is no such file or it names a relative path."""
    try:
        text = (worktree / ".git").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):  # missing, or a folder (a main worktree)
        return None
    found = text.removeprefix("gitdir: ")
    return Path(found) if found != text and os.path.isabs(found) else None


def dot_git_intact(worktree: Path) -> bool:
    """Whether the worktree's ``.git`` is the file git wrote, naming its registration (an
    agent may have pointed it elsewhere: such a worktree is never handed on)."""
    found = registration(worktree)
    if found is None or not (worktree / ".git").is_file() or (worktree / ".git").is_symlink():
        return False
    named = linked_git_dir(worktree)
    return named is not None and named.resolve() == found[0].resolve()


def detached_at(git_dir: Path) -> str | None:
    """The commit a worktree's HEAD names directly, read from its HEAD file; None when HEAD
    names a branch or cannot be read."""
    try:
        head = (git_dir / "HEAD").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return head if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", head) else None


def rename_worktree(source: Path, target: Path) -> bool:
    """Move a linked worktree as ``git worktree move`` does (rename its folder, point its
    metadata at the new place), without the listing of every worktree that makes git's own
    move need the repository lock. False, with nothing moved, when ``source`` is not a plain
    worktree registered there (locked, with submodules, relative paths): then use
    ``move_worktree``."""
    admin = linked_git_dir(source)
    if admin is None or (admin / "locked").exists() or (admin / "modules").exists():
        return False
    try:
        registered = Path((admin / "gitdir").read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return False
    if not registered.is_absolute() or registered.resolve() != (source / ".git").resolve():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(source, target)
    faults.point("worktree_renamed", target.name)
    # Killed here, the folder is at its new place while git still names the old one:
    # ``git worktree repair`` mends that (the pool does, for a path it finds taken).
    write_text_atomic(admin / "gitdir", f"{target.resolve() / '.git'}\n")
    return True


def switch_worktree(path: Path, branch: str, old: str, commit: str) -> None:
    """Put ``path``, a clean worktree whose HEAD is detached at ``old``, on a new ``branch``
    at ``commit``: a two-tree read-tree writes only the files that differ, and refuses
    when one of them has a change."""
    if old != commit:  # (a pooled worktree is mostly at the commit a run starts from)
        with _CHECKOUTS:
            run_git(["read-tree", "-m", "-u", old, commit], path)
    # HEAD names the branch before it exists: killed in between, the worktree is on no
    # commit, so the pool sees it unfit and removes it, never hands it on half switched.
    run_git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], path)
    run_git(["update-ref", "-m", f"branch: Created from {commit}", f"refs/heads/{branch}",
             commit, "0" * len(commit)], path)


@retry_on_lock
def add_detached_worktree(repo: Repository, path: Path, commit: str) -> None:
    refuse_occupied(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with repository_lock(repo):
        repo.git("worktree", "add", "--quiet", "--detach", str(path), commit)


def strip_worktree(worktree: Path) -> list[str]:
    """Take from a runner's worktree what it holds for itself: its own config
    (``config.worktree``), its own refs (``refs/worktree/``, ``refs/bisect/``,
    ``refs/rewritten/``) and the index flags that hide a file. A pooled worktree carries
    nothing of one run into the next. The paths that were hidden."""
    found = registration(worktree)
    if found is None:
        return []
    own = found[0] / "config.worktree"
    if own.is_dir() and not own.is_symlink():
        shutil.rmtree(own)
    else:
        own.unlink(missing_ok=True)
    refs = run_git(["for-each-ref", "--format=%(refname)", "refs/worktree/", "refs/bisect/",
                    "refs/rewritten/"], worktree).stdout.split()
    if refs:
        run_git(["update-ref", "--stdin"], worktree,
                stdin="".join(f"delete {ref}\n" for ref in refs))
    return unhide(worktree)


def commit_all(repo: Repository, worktree: Path, message: str, exclude: Sequence[str] = (),
               among: Sequence[str] | None = None) -> bool:
    """Commit everything left in ``worktree`` except ``exclude``; False if nothing was left.
    ``among``: the only paths that can have changed, if the caller knows (worktree_dirty)."""
    # A status first: mostly nothing is left, and it leaves the untracked cache warm for clean.
    if not set(worktree_dirty(worktree, among)) - set(exclude):
        return False
    # --sparse: in a sparse worktree, a file written outside the sparse set is committed
    # too (and then refused by the ownership check), not left behind with an error.
    run_git(["add", "--all", "--sparse"], worktree)
    if exclude:  # (an exclude pathspec naming an ignored file makes 'git add' fail)
        run_git(["--literal-pathspecs", "reset", "--quiet", "--", *exclude], worktree)
    if run_git(["diff", "--cached", "--quiet"], worktree, check=False).ok:
        return False
    run_git(["commit", "--quiet", "--no-verify", "-m", message], worktree,
            env=identity_env(repo))
    return True


def remove_worktree(repo: Repository, path: Path, prune: bool = True) -> bool:
    """Remove a worktree of this repository, even if it has changes; False if ``path`` is
    not one (then nothing is touched). ``prune`` forgets worktrees that vanished."""
    with repository_lock(repo):
        if path.exists():
            if not owns_worktree(repo, path):
                return False
            record = admin_dir(repo, path)
            overlay = layers_of(record) if record is not None else None
            if overlay is not None:  # (its work was saved through the mount, if any was left)
                unmount(path)
                faults.point("overlay_unmounted", path.name)
            repo.git("worktree", "remove", "--force", "--force", str(path), check=False)
            if path.exists():  # e.g. it holds a submodule, or an earlier removal was cut short,
                shutil.rmtree(path)  # or its .git names another git dir (git refuses then)
            if record is not None and record.is_dir():
                shutil.rmtree(record)  # (what 'worktree prune' does for a vanished worktree)
            if overlay is not None:
                drop(overlay)
        if prune:
            repo.git("worktree", "prune")
    return True


def admin_dir(repo: Repository, path: Path) -> Path | None:
    """This repository's record of the worktree at ``path`` (``<common>/worktrees/<id>``)."""
    records = repo.common_dir / "worktrees"
    wanted = str(path / ".git")
    for gitdir in records.glob("*/gitdir") if records.is_dir() else ():
        try:
            if gitdir.read_text(errors="replace").strip() == wanted:
                return gitdir.parent
        except OSError:
            continue
    return None


def owns_worktree(repo: Repository, path: Path) -> bool:
    """True if ``path`` is registered as a worktree of this repository, whatever its
    ``.git`` now says (an agent can rewrite that file, or remove it)."""
    return admin_dir(repo, path) is not None


REMOVING_MARK = "wtr-removing"


def mark_removing(repo: Repository, path: Path) -> None:
    """Note, in the worktree's registration, that its removal began (its work is saved)."""
    record = admin_dir(repo, path)
    if record is not None:
        (record / REMOVING_MARK).write_text("")


def removal_started(repo: Repository, path: Path) -> bool:
    """True if an earlier removal of this worktree began (and was cut short). (Not a
    missing ``.git``: an agent can remove that, and its work is still rescued.)"""
    record = admin_dir(repo, path)
    return record is None or (record / REMOVING_MARK).exists()


def snapshot_worktree(repo: Repository, worktree: Path, message: str,
                      exclude: Sequence[str] = ()) -> str | None:
    """A commit holding everything uncommitted in ``worktree`` (untracked files included,
    ignored ones and ``exclude`` not), on top of its HEAD; made through a temporary index,
    so the worktree itself is not touched. None if that leaves nothing to save."""
    head = head_of(worktree)
    unhide(worktree)  # (the temporary index starts as a copy of the worktree's own)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _seed_index(worktree, head, env)
        run_git(["add", "--all", "--sparse"], worktree, env=env)
        if exclude:  # back to HEAD's version: a copied secret never enters a commit
            run_git(["--literal-pathspecs", "reset", "--quiet", head, "--", *exclude],
                    worktree, env=env)
        tree = run_git(["write-tree"], worktree, env=env).stdout.strip()
    if tree == tree_of(repo, head):
        return None
    return commit_tree(repo, tree, [head], message)


def _seed_index(worktree: Path, head: str, env: Mapping[str, str]) -> None:
    """Start a temporary index from the worktree's own (a sparse worktree's files outside
    its sparse set are absent on purpose, not deleted: its index says so), else from HEAD."""
    own = index_file(worktree)
    if own.is_file():
        shutil.copyfile(own, env["GIT_INDEX_FILE"])
    else:
        run_git(["read-tree", head], worktree, env=env)


STALE_LOCK_SECONDS = 5.0


def clear_stale_locks(repo: Repository, ref_folders: Sequence[str], worktrees: Sequence[Path],
                      timeout: float = 120.0) -> list[Path]:
    """Wait for git lock files (``*.lock``) under ``ref_folders``, ``packed-refs.lock`` and
    the registrations of ``worktrees`` while a live process holds them open; remove the
    ones no process holds that are older than a few seconds (their git was killed).
    Returns what was removed. Without /proc nothing is removed, only waited for."""
    deadline = time.monotonic() + timeout
    removed: list[Path] = []
    can_tell = Path("/proc/self/fd").is_dir()
    while locks := _lock_files(repo, ref_folders, worktrees):
        held = _held_open({str(lock) for lock in locks}) if can_tell else set()
        for lock in locks:
            if can_tell and str(lock) not in held and _age(lock) >= STALE_LOCK_SECONDS:
                lock.unlink(missing_ok=True)
                removed.append(lock)
                logs.debug("removed stale git lock", path=str(lock))
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return removed


def _lock_files(repo: Repository, ref_folders: Sequence[str],
                worktrees: Sequence[Path]) -> list[Path]:
    common = repo.common_dir
    found = [common / "packed-refs.lock"]
    for folder in ref_folders:
        found += (common / folder).rglob("*.lock") if (common / folder).is_dir() else []
    for path in worktrees:
        record = admin_dir(repo, path)
        found += record.glob("*.lock") if record is not None else []
    return [lock for lock in found if lock.is_file()]


def _held_open(paths: set[str]) -> set[str]:
    """Which of ``paths`` some process has open (every /proc/<pid>/fd we may read)."""
    held: set[str] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            entries = list(fd_dir.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                target = os.readlink(entry)
            except OSError:
                continue
            if target in paths:
                held.add(target)
    return held


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def git_dir_of(worktree: Path) -> Path:
    """The git metadata folder of a worktree (``.git/worktrees/<name>`` for a linked one)."""
    return Path(run_git(["rev-parse", "--absolute-git-dir"], worktree).stdout.strip())
