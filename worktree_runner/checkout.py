"""How a stream's worktree gets its files: the plan's ``checkout`` setting.

- ``full``: ``git worktree add`` writes every file (or a pooled worktree is reused).
- ``overlay``: one read-only checkout of the run's base commit, made once, shared by every
  stream as the lower layer of a kernel overlay mounted at the stream's worktree path;
  what the agent writes goes to the stream's own upper layer (overlay.py). Making a
  worktree costs a mount, whatever the size of the repository. Needs mount rights (root).
- ``reflink``: a copy-on-write clone of that shared checkout (``cp --reflink=always``), on
  filesystems that share blocks between files (btrfs, xfs): no file data is written, but
  each file is still a new inode.
- ``auto`` (the default): overlay where it works, else reflink, else full; always full in
  a repository of fewer than 10,000 files, where a checkout is cheap.

A method that does not work where the stream runs (not root, a filesystem without
reflink, a Dask worker elsewhere) falls back to ``full``; the method used is recorded per
stream (``checkout`` in ``status --json``). Sparse streams are always ``full``.

The shared checkout of a commit lives in ``<worktrees root>/.base/<commit>`` (files in
``tree``, their index in ``index``), built in a temporary folder renamed into place, so a
half-made one is never used; each overlay's layers live in ``<worktrees root>/.layers``.
Every worktree gets a copy of the shared index: its stat data match what the agent sees
(overlayfs reports the lower file's inode, size and times; git does not compare the
device), so the agent's first ``git status`` reads no file's content.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from filelock import FileLock

from worktree_runner import faults, git, overlay
from worktree_runner.errors import WtrError

METHODS = ("auto", "overlay", "reflink", "full")
BASE_DIR = ".base"
LAYERS_DIR = ".layers"
_FICLONE = 0x40049409
AUTO_MIN_FILES = 10_000  # from this many files, ``auto`` takes a thin worktree
NAMED_MAX = 2000  # paths a look names on its command line (beyond: it looks at all)
_WORKS: dict[tuple[str, Path], bool] = {}
_WORKS_LOCK = threading.Lock()


def method_for(wanted: str, worktrees_root: Path, repo: git.Repository | None = None) -> str:
    """The method that serves ``wanted`` here: itself when it works, else the next one.
    ``auto`` is ``full`` in a repository of fewer than AUTO_MIN_FILES files (by the count
    in its main checkout's index): there a checkout costs little and is plain folders."""
    if wanted == "auto" and (repo is None or tracked_estimate(repo) < AUTO_MIN_FILES):
        return "full"
    if wanted in ("auto", "overlay") and works("overlay", worktrees_root):
        return "overlay"
    if wanted in ("auto", "reflink") and works("reflink", worktrees_root):
        return "reflink"
    return "full"


def tracked_estimate(repo: git.Repository) -> int:
    """How many files the main checkout's index holds, read from its header (no entry is
    read); 0 without an index. A split index's header counts only its own part."""
    try:
        with (repo.common_dir / "index").open("rb") as index:
            header = index.read(12)
    except OSError:
        return 0
    return int.from_bytes(header[8:12], "big") if header[:4] == b"DIRC" else 0


def works(method: str, worktrees_root: Path) -> bool:
    """Whether ``method`` works in ``worktrees_root`` (tried once per process)."""
    key = (method, worktrees_root)
    with _WORKS_LOCK:
        if key not in _WORKS:
            probe = _overlay_works if method == "overlay" else _reflink_works
            worktrees_root.mkdir(parents=True, exist_ok=True)
            _WORKS[key] = probe(worktrees_root)
        return _WORKS[key]


def _overlay_works(root: Path) -> bool:
    if os.geteuid() != 0 or "\toverlay\n" not in _filesystems():
        return False
    _sweep_probes(root)
    with tempfile.TemporaryDirectory(prefix=f".probe-{os.getpid()}-", dir=root) as tmp:
        folder = Path(tmp)
        (folder / "lower").mkdir()
        (folder / "mnt").mkdir()
        (folder / "lower" / "seen").write_text("")
        probe = overlay.Layers(folder / "layers")
        probe.upper.mkdir(parents=True)
        probe.work.mkdir()
        (probe.folder / "lower").write_text(str(folder / "lower"))
        try:
            overlay.mount(folder / "mnt", probe)
        except OSError:
            return False
        try:
            return (folder / "mnt" / "seen").exists()
        finally:
            overlay.unmount(folder / "mnt")


def _sweep_probes(root: Path) -> None:
    """Remove what a probe killed midway left (its mount too), unless its process lives."""
    for folder in root.glob(".probe-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            overlay.unmount(folder / "mnt")
            shutil.rmtree(folder, ignore_errors=True)


def _filesystems() -> str:
    try:
        return Path("/proc/filesystems").read_text()
    except OSError:
        return ""


def _reflink_works(root: Path) -> bool:
    with tempfile.TemporaryDirectory(prefix=f".probe-{os.getpid()}-", dir=root) as tmp:
        source, clone = Path(tmp) / "a", Path(tmp) / "b"
        source.write_bytes(b"x" * 4096)
        with source.open("rb") as src, clone.open("wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
            except OSError:
                return False
    return True


# -- the shared checkout of a commit ------------------------------------------------------


def base_checkout(repo: git.Repository, worktrees_root: Path, commit: str) -> Path:
    """The shared read-only checkout of ``commit``, made now if it is not there."""
    bases = worktrees_root / BASE_DIR
    folder = bases / commit
    if folder.is_dir():
        return folder
    bases.mkdir(parents=True, exist_ok=True)
    with FileLock(str(bases / f"{commit}.lock")):
        if folder.is_dir():
            return folder
        building = bases / f"{commit}.building"
        shutil.rmtree(building, ignore_errors=True)  # (what a killed build left)
        (building / "tree").mkdir(parents=True)
        env = {"GIT_INDEX_FILE": str(building / "index")}
        tree = ["--work-tree", str(building / "tree")]
        git.run_git(["read-tree", commit], repo.root, env=env)
        git.run_git([*tree, "checkout-index", "--all", "--quiet", "--index"], repo.root,
                    env=env)
        # Files written in the index's own second are "racy": git hashes them again at
        # every status until an index is written in a later second. One refresh then,
        # which hashes only those, settles it for every worktree that copies this index.
        time.sleep(math.floor(time.time()) + 1.05 - time.time())
        git.run_git([*tree, "update-index", "-q", "--refresh"], repo.root, env=env, check=False)
        _split(repo, building, commit, env)
        os.rename(building, folder)
    return folder


def _split(repo: git.Repository, building: Path, commit: str, env: dict[str, str]) -> None:
    """Make the shared index a split one: its entries in ``sharedindex.<id>``, which every
    worktree's git folder hard-links, and a small ``index`` naming it, which each copies.
    An agent's commit then writes its few changed entries, not the whole index again (at a
    million files an index is 130 MB: twenty of them would outweigh the run's checkout).
    git writes the entries file into the git folder it runs in: a linked worktree's kind
    of folder made here for it (``gitdir``), not the repository's own."""
    gitdir = building / "gitdir"
    gitdir.mkdir()
    (gitdir / "commondir").write_text(f"{repo.common_dir}\n", encoding="utf-8")
    (gitdir / "HEAD").write_text(f"{commit}\n", encoding="utf-8")
    git.run_git(["update-index", "--split-index"], repo.root,
                env={**env, "GIT_DIR": str(gitdir)}, check=False)


def prune_bases(worktrees_root: Path, keep: set[str]) -> list[Path]:
    """Remove the shared checkouts no overlay lies on any more, but those of the commits
    in ``keep`` (the bases of running runs: their next stream may clone one)."""
    bases = worktrees_root / BASE_DIR
    if not bases.is_dir():
        return []
    used = {lower.parent for lower in _lowers(worktrees_root)}
    gone = []
    for folder in bases.iterdir():
        if not folder.is_dir() or folder in used or folder.name in keep:
            continue
        with FileLock(str(bases / f"{folder.name.split('.')[0]}.lock")):
            shutil.rmtree(folder, ignore_errors=True)
        gone.append(folder)
    for lock in bases.glob("*.lock"):
        with contextlib.suppress(OSError):
            lock.unlink()
    with contextlib.suppress(OSError):
        bases.rmdir()
    return gone


def _lowers(worktrees_root: Path) -> list[Path]:
    found = []
    for note in (worktrees_root / LAYERS_DIR).glob("*/*/lower"):
        lower = overlay.Layers(note.parent).lower
        if lower is not None:
            found.append(lower)
    return found


# -- a stream's worktree -------------------------------------------------------------------


def fill(repo: git.Repository, path: Path, method: str, worktrees_root: Path,
         run_commit: str, stream: str) -> None:
    """Give ``path``, a worktree registered with --no-checkout, its files by ``method``
    (overlay or reflink) from the shared checkout of ``run_commit``; its index is the last
    thing written, so a worktree killed before that is filled again. Safe to repeat."""
    admin = git.admin_dir(repo, path)
    if admin is None:
        raise WtrError(f"the worktree at {path} is not registered", hint="'wtr resume' again")
    base = base_checkout(repo, worktrees_root, run_commit)
    if method == "overlay":
        folder = worktrees_root / LAYERS_DIR / path.parent.name / path.name
        found = overlay.prepare(admin, path, folder, base / "tree")
        faults.point("overlay_registered", stream)
        overlay.mount(path, found)
        faults.point("overlay_mounted", stream)
    elif not (admin / "index").exists():
        subprocess.run(["cp", "-a", "--reflink=always", f"{base / 'tree'}/.", str(path)],
                       check=True, capture_output=True)
        faults.point("reflink_cloned", stream)
    _settle_index(path, admin, base / "index", run_commit, refresh=method == "reflink")


def _settle_index(path: Path, admin: Path, shared: Path, run_commit: str,
                  refresh: bool) -> None:
    """The worktree's index: the shared checkout's, moved to the worktree's own commit
    (only the files that differ are written) and, for a clone, refreshed (its files are
    new inodes). Written under another name and renamed into place."""
    index = admin / "index"
    if index.exists():
        return
    building = admin / "index.wtr-building"
    for entries in (shared.parent / "gitdir").glob("sharedindex.*"):
        _link_or_copy(entries, admin / entries.name)
    shutil.copyfile(shared, building)
    env = {"GIT_INDEX_FILE": str(building)}
    if refresh:  # (reads every file once; a reset would rewrite each, unsharing its blocks)
        git.run_git(["update-index", "-q", "--refresh"], path, env=env, check=False)
    if git.head_of(path) != run_commit:
        git.run_git(["reset", "--quiet", "--hard"], path, env=env)
    os.rename(building, index)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (a split index's entries never change once written), or a copy where
    the two folders are on different filesystems."""
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        temporary = target.with_name(target.name + ".wtr-building")
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)


def remount(repo: git.Repository, path: Path) -> bool:
    """Mount an overlay worktree whose mount is down (after a reboot, or a kill between
    its registration and its mount); True if ``path`` is an overlay worktree."""
    admin, found = _layers(repo, path)
    if admin is None or found is None:
        return False
    if found.lower is None:
        raise WtrError(f"the overlay worktree {path} does not name the checkout it lies on",
                       hint=f"its own files are in {found.upper}")
    overlay.prepare(admin, path, found.folder, found.lower)
    overlay.mount(path, found)
    return True


def suspects(repo: git.Repository, path: Path) -> list[str] | None:
    """The only paths of the overlay worktree ``path`` whose file, index entry or commit can
    differ from the run's base, so the only ones a look for uncommitted work must read
    (git.worktree_dirty's ``among``); None for any other worktree, or when they are so many
    that a look at everything costs no more.

    A file the agent never wrote is the shared checkout's, which is the base's: what it
    wrote, created, deleted (a whiteout) or renamed is in its upper layer. Beside those,
    the paths where its commits or its index differ from the base: a commit or a staged
    entry made without touching the file."""
    _, found = _layers(repo, path)
    if found is None or found.lower is None or not overlay.is_mounted(path):
        return None
    base = found.lower.parent.name
    paths = overlay.written(found.upper, limit=NAMED_MAX)
    if paths is None:
        return None
    for args in (["diff", "--name-only", "-z", "--no-renames", base, "HEAD", "--"],
                 ["diff-index", "--cached", "--name-only", "-z", "--no-renames", base, "--"]):
        paths.update(p for p in git.run_git(args, path).stdout.split("\0") if p)
    return sorted(paths) if len(paths) <= NAMED_MAX else None


def is_overlay(repo: git.Repository, path: Path) -> bool:
    return _layers(repo, path)[1] is not None


def _layers(repo: git.Repository, path: Path) -> tuple[Path | None, overlay.Layers | None]:
    """The registration of the worktree at ``path``, and its layers if it is an overlay."""
    admin = git.admin_dir(repo, path)
    return admin, overlay.layers_of(admin) if admin is not None else None


def sweep(repo: git.Repository, worktrees_root: Path, run: str) -> list[Path]:
    """Remove the layers of the run that no registered worktree names any more (a removal
    killed after the registration went); never one still mounted. The ones removed."""
    folder = worktrees_root / LAYERS_DIR / run
    if not folder.is_dir():
        return []
    named = set()
    records = repo.common_dir / "worktrees"
    for note in records.glob(f"*/{overlay.LAYERS_NOTE}") if records.is_dir() else ():
        found = overlay.layers_of(note.parent)
        if found is not None:
            named.add(found.folder)
    gone = []
    for entry in folder.iterdir():
        if entry not in named and not overlay.is_mounted(folder.parent.parent / run / entry.name):
            overlay.drop(overlay.Layers(entry))
            gone.append(entry)
    with contextlib.suppress(OSError):
        folder.rmdir()
    with contextlib.suppress(OSError):
        folder.parent.rmdir()
    return gone
