"""What changed: status of a worktree, diffs and logs between commits, and the ignore
rules a worktree is seen through."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from worktree_runner.git.door import (
    NO_HOOKS,
    Repository,
    _nul_tokens,
    clean_env,
    git_executable,
    run_git,
)


def changed_paths(repo: Repository, old: str, new: str) -> list[str]:
    """Paths that differ between two commits (renames count as delete + add)."""
    out = repo.git("diff", "--name-only", "-z", "--no-renames", old, new).stdout
    return [name for name in out.split("\0") if name]


_COMMIT_MARK = "\x01\x02wtr "


def commit_changes(repo: Repository, commit: str, limit: int, most: int | None = None,
                   first_parent: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(commit time, paths changed) of the last ``limit`` non-merge commits reachable from
    ``commit``, newest first, read as git writes them (one pass, never all held at once).
    With ``first_parent``, the commits of ``commit``'s first-parent line instead, a merge
    as its diff to its first parent: a merged branch is one change. Renames count as
    delete + add; a root commit lists every file it added, or, given ``most``, only the
    first ``most + 1`` when it added more (enough to tell it is over): the first commit
    of a big repository adds every file, and listing a million paths from git only to be
    told they are too many took most of a minute."""
    walk = ["--first-parent", "--diff-merges=first-parent"] if first_parent else ["--no-merges"]
    args = ["log", f"--max-count={limit}", *walk, "--min-parents=1", "--no-renames",
            "--name-only", "-z", "--format=%x01%x02wtr %ct", commit, "--"]
    when: int | None = None
    paths: list[str] = []
    seen = 0
    for token in _nul_tokens(args, repo.root):
        if token.startswith(_COMMIT_MARK):
            if when is not None:
                yield when, paths
                seen += 1
            when, paths = int(token[len(_COMMIT_MARK):]), []
        elif token.strip("\n"):
            paths.append(token.removeprefix("\n"))
    if when is not None:
        yield when, paths
        seen += 1
    if seen < limit:  # (the walk reached the first commits: the roots are in the window)
        yield from _root_commits(repo, commit, limit - seen, most, first_parent)


def _root_commits(repo: Repository, commit: str, limit: int, most: int | None,
                  first_parent: bool) -> Iterator[tuple[int, list[str]]]:
    walk = ["--first-parent"] if first_parent else []  # (only the root of that line)
    out = repo.git("log", f"--max-count={limit}", *walk, "--max-parents=0",
                   "--format=%ct %H", commit, "--").stdout
    for line in out.splitlines():
        when, root = line.split()
        listed = _nul_tokens(["ls-tree", "-r", "-z", "--name-only", "--full-tree", root],
                             repo.root)
        try:
            paths = list(listed if most is None else itertools.islice(listed, most + 1))
        finally:
            listed.close()  # (stops git when the list was cut short)
        yield int(when), paths


def _status_paths(worktree: Path, untracked: str,
                  among: Sequence[str] | None = None) -> list[str]:
    # --no-renames: a rename would add a second, unprefixed entry (its old path).
    # The untracked cache (kept in the worktree's index) lets the next look skip every
    # folder whose mtime has not changed: the check before clean then costs a stat per file.
    # git 2.39 uses it for "all" only when "all" is the configured default, not a flag.
    args = ["-c", "core.untrackedCache=true", "-c", f"status.showUntrackedFiles={untracked}"]
    if among is not None:
        args += ["--literal-pathspecs"]
    args += ["status", "--porcelain", "-z", "--no-renames"]
    if among is not None:
        args += ["--", *among]
    out = run_git(args, worktree).stdout
    return [entry[3:] for entry in out.split("\0") if len(entry) > 3]


def worktree_dirty(worktree: Path, among: Sequence[str] | None = None) -> list[str]:
    """Paths with uncommitted or untracked changes in a runner's ``worktree`` (ignored files
    aside), hidden ones included: the index flags that hide a file are cleared first.

    Given ``among``, only those paths are looked at: the caller knows that no other path
    can differ (an overlay worktree: what is not in its upper layer is its base's,
    checkout.py), and the look costs what the agent changed, not what the repository
    holds."""
    if among is not None and not among:
        return []
    unhide(worktree, among)
    return _status_paths(worktree, "all", among)


def unhide(worktree: Path, among: Sequence[str] | None = None) -> list[str]:
    """Clear the index flags that make git look away from a file of a runner's worktree
    (skip-worktree, assume-unchanged: ``ls-files -v`` tags ``S`` and lower case), so that
    status, add, reset and read-tree see every file as it is; the paths cleared. A sparse
    worktree keeps skip-worktree on the files it leaves out (those not on disk). Given
    ``among``, only those paths (see ``worktree_dirty``)."""
    only = ["--literal-pathspecs", "ls-files", "-v", "-z", "--", *among] if among else None
    out = run_git(only or ["ls-files", "-v", "-z"], worktree).stdout
    flagged = [entry for entry in out.split("\0")
               if len(entry) > 2 and (entry[0] == "S" or entry[0].islower())]
    absent = {e for e in flagged if e[0] in "Ss" and not os.path.lexists(worktree / e[2:])}
    if absent and run_git(["config", "--type=bool", "core.sparseCheckout"], worktree,
                          check=False).stdout.strip() == "true":
        # (a set: a sparse worktree of a large repository leaves out most of its files)
        flagged = [entry for entry in flagged if entry not in absent]
    paths = [entry[2:] for entry in flagged]
    for flag in ("--no-assume-unchanged", "--no-skip-worktree") if paths else ():
        # (one flag per call: update-index applies only the first it is given)
        run_git(["update-index", flag, "-z", "--stdin"], worktree,
                stdin="".join(f"{path}\0" for path in paths))
    return paths


def subjects(repo: Repository, old: str, new: str, limit: int = 20) -> list[str]:
    out = repo.out("log", f"--max-count={limit}", "--format=%s", f"{old}..{new}")
    return [line for line in out.splitlines() if line]


@dataclass(frozen=True)
class FileStat:
    path: str
    added: int | None  # None for a binary file
    deleted: int | None


def diffstat(repo: Repository, old: str, new: str) -> list[FileStat]:
    """Lines added and deleted per file between two commits (``git diff --numstat``)."""
    out = repo.git("diff", "--numstat", "-z", "--no-renames", old, new, check=False).stdout
    stats = []
    for entry in filter(None, out.split("\0")):
        added, deleted, path = entry.split("\t", 2)
        stats.append(FileStat(path, None if added == "-" else int(added),
                              None if deleted == "-" else int(deleted)))
    return stats


def oneline_log(repo: Repository, old: str, new: str, limit: int = 100) -> list[str]:
    """``<short id> <subject>`` of the commits in ``old..new``, newest first."""
    out = repo.git("log", f"--max-count={limit}", "--format=%h %s", f"{old}..{new}",
                   check=False).stdout
    return [line for line in out.splitlines() if line]


def untracked_files(repo: Repository) -> list[str]:
    """Untracked files of the main worktree, ignored ones included (for ``copy``)."""
    out = run_git(["ls-files", "--others", "-z"], repo.root).stdout
    return [name for name in out.split("\0") if name]


def show_diff(repo: Repository, base: str, head: str, stat: bool) -> int:
    """``git diff base head`` printed by git itself to our stdout: its pager and colours
    apply as they would to the user's own ``git diff``. Returns git's exit code."""
    args = [git_executable(), "diff", *(["--stat"] if stat else []), base, head, "--"]
    return subprocess.run(args, cwd=repo.root, env=clean_env(), check=False).returncode


def diff_text(repo: Repository, base: str, head: str, limit: int) -> tuple[str, bool]:
    """``git diff base head`` as text for a page: no colour, no external diff or textconv
    (the repository's config must not run programs), undecodable bytes replaced, at most
    ``limit`` characters; and whether it was cut."""
    args = [git_executable(), *NO_HOOKS, "diff", "--no-color", "--no-ext-diff", "--no-textconv",
            base, head, "--"]
    out = subprocess.run(args, cwd=repo.root, env=clean_env(), capture_output=True,
                         check=False).stdout.decode("utf-8", errors="replace")
    return out[:limit], len(out) > limit


def tracked_changes(worktree: Path) -> list[str]:
    """Uncommitted changes to tracked files (staged or not) in ``worktree``."""
    return _status_paths(worktree, "no")


def status_entries(worktree: Path, index_copy: Path | None = None) -> list[tuple[str, str]]:
    """(two-letter code, path) of each uncommitted or untracked path of ``worktree``.

    This looks at the user's own checkout, so it never takes its index lock (a commit the
    user makes meanwhile would fail) nor rewrites its index. Given ``index_copy`` (a file
    of the caller's), git reads a copy of that index instead, made again whenever the
    index changes, and keeps in the copy what makes the next look cheap: the refreshed
    file stats and the untracked cache (a look at a million files: 35 s the first time,
    9 s after, on a tmpfs). The copy holds what the index holds, so the answer is the same."""
    index = index_file(worktree) if index_copy is not None else None
    if index_copy is None or index is None or not index.is_file():
        args = ["--no-optional-locks", "status", "--porcelain", "-z", "--no-renames",
                "--untracked-files=all"]
        out = run_git(args, worktree).stdout
    else:
        _copy_if_changed(index, index_copy)
        # (the looks are one at a time: a lock left is a look that was killed)
        _beside(index_copy, ".lock").unlink(missing_ok=True)
        args = ["-c", "core.untrackedCache=true", "-c", "status.showUntrackedFiles=all",
                "status", "--porcelain", "-z", "--no-renames"]
        out = run_git(args, worktree, env={"GIT_INDEX_FILE": str(index_copy)}).stdout
    return [(entry[:2], entry[3:]) for entry in out.split("\0") if len(entry) > 3]


def index_file(worktree: Path) -> Path:
    """The index file of ``worktree`` (its own, for a linked worktree)."""
    found = run_git(["rev-parse", "--git-path", "index"], worktree).stdout.strip()
    return worktree / found  # (absolute already unless it lies under the worktree)


def drop_index_copy(copy: Path) -> None:
    """Remove an ``index_copy`` of ``status_entries`` and what it keeps beside it."""
    for suffix in ("", ".from", ".building", ".lock"):
        _beside(copy, suffix).unlink(missing_ok=True)


def _beside(copy: Path, suffix: str) -> Path:
    return copy.with_name(copy.name + suffix)


def _copy_if_changed(index: Path, copy: Path) -> None:
    """Copy ``index`` to ``copy`` unless the copy was made from it as it is now (its size,
    times and inode, kept beside the copy: git writes an index by renaming a new file)."""
    info = index.stat()
    stamp = f"{info.st_ino} {info.st_size} {info.st_mtime_ns} {info.st_ctime_ns}"
    note = _beside(copy, ".from")
    try:
        if copy.is_file() and note.read_text(encoding="utf-8") == stamp:
            return
    except OSError:
        pass
    note.unlink(missing_ok=True)
    building = _beside(copy, ".building")
    shutil.copyfile(index, building)
    os.replace(building, copy)
    note.write_text(stamp, encoding="utf-8")


def global_excludes(repo: Repository) -> str:
    """The text of the user's own ignore file (``core.excludesFile``, else git's default)."""
    configured = repo.git("config", "--get", "--path", "core.excludesFile", check=False)
    if configured.ok and configured.stdout.strip():
        path = Path(configured.stdout.strip())
    else:
        config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        path = Path(config_home) / "git" / "ignore"
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def literal_pattern(path: str) -> str:
    """A gitignore line that matches exactly ``path`` (from the repository root)."""
    escaped = re.sub(r"([\\*?\[])", r"\\\1", path)
    stripped = escaped.rstrip(" ")
    return "/" + stripped + "\\ " * (len(escaped) - len(stripped))
