"""``sandbox: true``: the agent runs under bubblewrap, the filesystem read-only around it.

Writable inside: the stream's worktree, the repository's object store, the worktree's own
git metadata (``.git/worktrees/<name>``: HEAD, index, its reflog; not its config), the
folder holding the run's stream branches (git writes a branch by renaming a lock file
beside it; the other streams' branch files are bound read-only over themselves, so they
cannot be replaced), the reflog of its own branch, its folder in the run's state
(``wtr progress``), the folder of ``wtr lock``, a private empty ``/tmp`` and the plan's
``writable`` paths.
Everything else (the main checkout, other worktrees, ``.git/hooks``, ``.git/config``,
every other ref) is read-only. Processes live in their own PID namespace and die with
the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worktree_runner.errors import BadInput

BWRAP = "bwrap"
# Trees the sandbox hides behind fresh mounts (its private /tmp, its own /dev).
HIDDEN = ("/tmp/", "/dev/shm/")


def bwrap_path() -> str | None:
    return shutil.which(BWRAP)


def require(sandboxed: Sequence[str]) -> None:
    """One clear error when streams ask for the sandbox and this machine has none."""
    if not sandboxed:
        return
    names = ", ".join(sandboxed[:5]) + (" ..." if len(sandboxed) > 5 else "")
    if not sys.platform.startswith("linux"):
        raise BadInput(f"sandbox: true (streams {names}) needs Linux and bubblewrap",
                       hint="drop 'sandbox' from the plan on this system")
    if bwrap_path() is None:
        raise BadInput(f"sandbox: true (streams {names}) needs bubblewrap ('bwrap'), "
                       "which is not on PATH",
                       hint="install it (Debian/Ubuntu: apt-get install bubblewrap) or drop "
                            "'sandbox' from the plan")


@dataclass(frozen=True)
class Layout:
    """The paths a sandboxed stream may write, and what it must see read-only."""

    worktree: Path
    common_dir: Path
    worktree_git_dir: Path  # .git/worktrees/<name>
    branch: str  # full ref name, refs/heads/wtr/<run>/<stream>
    state_dir: Path  # the stream's folder in the run's state
    locks_dir: Path
    readable: tuple[Path, ...]  # shown read-only even if under /tmp (repository, tools)
    writable: tuple[Path, ...]  # the plan's extra writable paths, ~ expanded


def expand(path: str) -> Path:
    return Path(os.path.expanduser(path)).resolve()


def _ref_binds(layout: Layout) -> list[str]:
    ref_file = layout.common_dir / layout.branch
    folder = ref_file.parent
    args = ["--bind", str(folder), str(folder)]
    for sibling in sorted(folder.iterdir()):
        if sibling != ref_file and sibling.is_file():
            args += ["--ro-bind", str(sibling), str(sibling)]
    reflog = layout.common_dir / "logs" / layout.branch
    if reflog.parent.is_dir():
        reflog.touch(exist_ok=True)
        args += ["--bind", str(reflog), str(reflog)]
    return args


def _git_dir_binds(git_dir: Path) -> list[str]:
    # What points git at a repository stays as the runner made it; the worktree's own
    # config too, made (empty) if it is missing so that the agent cannot make one.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(git_dir / "config.worktree",
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    args = ["--bind", str(git_dir), str(git_dir)]
    for name in ("commondir", "gitdir", "config.worktree"):
        if (git_dir / name).is_file():
            args += ["--ro-bind", str(git_dir / name), str(git_dir / name)]
    return args


def wrap(argv: Sequence[str], layout: Layout) -> list[str]:
    """``argv`` run under bubblewrap as the module docstring says."""
    bwrap = bwrap_path()
    if bwrap is None:
        require(["this stream"])
    layout.locks_dir.mkdir(parents=True, exist_ok=True)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    args = [str(bwrap), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp"]
    # the private /tmp and /dev hide what lies there (/dev/shm too): keep the repository and
    # the files the command names (its program, its script) visible, read-only
    named = [Path(a) for a in argv if a.startswith(HIDDEN) and Path(a).exists()]
    # and this very wtr (its environment and its code), which the agent's `wtr` runs
    named += [path for path in (Path(sys.prefix), Path(__file__).resolve().parents[1])
              if str(path).startswith(HIDDEN)]
    for path in (*layout.readable, *named):
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(layout.worktree), str(layout.worktree),
             "--bind", str(layout.common_dir / "objects"), str(layout.common_dir / "objects"),
             *_git_dir_binds(layout.worktree_git_dir), *_ref_binds(layout),
             "--bind", str(layout.state_dir), str(layout.state_dir),
             "--bind", str(layout.locks_dir), str(layout.locks_dir)]
    for path in layout.writable:
        path.mkdir(parents=True, exist_ok=True)
        args += ["--bind", str(path), str(path)]
    args += ["--unshare-pid", "--die-with-parent", "--chdir", str(layout.worktree), "--",
             *argv]
    return args
