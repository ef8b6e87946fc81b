"""Overlay worktrees: a linked worktree whose files are a kernel overlay mount.

The lower layer is a read-only checkout shared by every stream of a run; each worktree has
its own upper layer (what its agent writes) and overlayfs work folder, in ``<layers>``.
Its registration (``<common>/worktrees/<id>``) says where the layers are
(``wtr-layers``) and is locked, so ``git worktree prune`` never forgets a worktree whose
mount is down (after a reboot, say): the folder under the mount holds nothing, not even
``.git``, which lives in the upper layer. Mounting again brings everything back.

Mounts are made with mount(2) directly (no helper program): as root, or with
CAP_SYS_ADMIN over a user namespace the caller arranged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from worktree_runner.errors import WtrError
from worktree_runner.files import write_text_atomic

LAYERS_NOTE = "wtr-layers"
LOCK_REASON = "wtr: an overlay checkout; its files are in a mount wtr makes (see its layers)"
_MNT_DETACH = 2


@dataclass(frozen=True)
class Layers:
    """The folders of one overlay worktree: ``lower`` (named in a file: the shared
    checkout), ``upper`` and ``work``."""

    folder: Path

    @property
    def upper(self) -> Path:
        return self.folder / "upper"

    @property
    def work(self) -> Path:
        return self.folder / "work"

    @property
    def lower(self) -> Path | None:
        try:
            return Path((self.folder / "lower").read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            return None


def layers_of(admin: Path) -> Layers | None:
    """The layers a worktree's registration names; None for any other worktree."""
    try:
        text = (admin / LAYERS_NOTE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Layers(Path(text)) if text and os.path.isabs(text) else None


def prepare(admin: Path, path: Path, folder: Path, lower: Path) -> Layers:
    """Make ``path``, a worktree just registered (holding only its ``.git``), ready to be
    mounted over ``lower``: its layers, its ``.git`` moved into the upper layer and its
    registration locked and pointing at the layers. Safe to repeat."""
    layers = Layers(folder)
    layers.upper.mkdir(parents=True, exist_ok=True)
    layers.work.mkdir(exist_ok=True)
    if layers.lower is None:
        write_text_atomic(folder / "lower", f"{lower}\n")
    write_text_atomic(admin / LAYERS_NOTE, f"{folder}\n")
    if not (admin / "locked").exists():
        write_text_atomic(admin / "locked", LOCK_REASON)
    dot_git = layers.upper / ".git"
    if not dot_git.exists():
        write_text_atomic(dot_git, f"gitdir: {admin}\n")
    if not is_mounted(path):
        leftover = path / ".git"
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink()
    return layers


def mount(path: Path, layers: Layers) -> None:
    """Mount the overlay at ``path`` unless it is there already."""
    if is_mounted(path):
        return
    lower = layers.lower
    if lower is None or not lower.is_dir():
        raise WtrError(f"the shared checkout under the overlay worktree {path} is gone "
                       f"({lower})", hint="its upper layer, with the agent's work, is kept in "
                       f"{layers.upper}; 'wtr clean' saves it")
    # redirect_dir: a folder of the lower layer can be renamed (without it rename(2)
    # fails with EXDEV: `git mv` of a folder would fail; `mv` copies every file)
    options = (f"lowerdir={_escaped(lower)},upperdir={_escaped(layers.upper)},"
               f"workdir={_escaped(layers.work)},redirect_dir=on")
    _call(path, "mount", b"overlay", os.fsencode(path), b"overlay", 0, os.fsencode(options))


def unmount(path: Path) -> None:
    """Take the overlay at ``path`` down; lazily when something still has it open (clean
    has ended the run's processes: what is left only reads)."""
    while is_mounted(path):
        try:
            _call(path, "umount2", os.fsencode(path), 0)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            _call(path, "umount2", os.fsencode(path), _MNT_DETACH)


def written(upper: Path, limit: int) -> set[str] | None:
    """The paths an upper layer holds (files, links, whiteouts of deleted paths, and
    folders that hide or move the lower one's: opaque or redirected), its worktree's
    ``.git`` aside; None past ``limit`` of them."""
    found: set[str] = set()
    folders = [(str(upper), "")]
    while folders:
        folder, prefix = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if not prefix and entry.name == ".git":
                    continue
                path = prefix + entry.name
                if not entry.is_dir(follow_symlinks=False):
                    found.add(path)
                    continue
                if _hides_lower(entry.path):
                    found.add(path)
                folders.append((entry.path, f"{path}/"))
        if len(found) > limit:
            return None
    return found


def _hides_lower(folder: str) -> bool:
    """Whether an upper folder hides the lower one of its name (opaque: it was removed and
    made again) or stands for another (redirect: a renamed folder)."""
    for name in ("trusted.overlay.opaque", "trusted.overlay.redirect"):
        try:
            os.getxattr(folder, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
                continue
            return True  # (cannot tell: look at it)
        return True
    return False


def drop(layers: Layers) -> None:
    shutil.rmtree(layers.folder, ignore_errors=True)


def is_mounted(path: Path) -> bool:
    """Whether a mount sits exactly at ``path`` (read from this process's mount table)."""
    wanted = os.fsencode(os.path.abspath(path))
    try:
        table = Path("/proc/self/mountinfo").read_bytes()
    except OSError:
        return os.path.ismount(path)
    return any(_unescaped(line.split(b" ")[4]) == wanted for line in table.splitlines()
               if line.count(b" ") >= 4)


def _unescaped(field: bytes) -> bytes:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    for code in (b"\\040", b"\\011", b"\\012", b"\\134"):
        field = field.replace(code, bytes([int(code[1:], 8)]))
    return field


def _escaped(path: Path) -> str:
    """A path as overlayfs options take it (``,`` and ``:`` separate; ``\\`` escapes)."""
    return str(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _call(path: Path, name: str, *args: object) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if getattr(libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}", str(path))
