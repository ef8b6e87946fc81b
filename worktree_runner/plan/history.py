"""The base's recent history as sets of paths changed together, read once and cached.

One pass of ``git log --name-only`` over the last N non-merge commits (or, for a
suggested plan, the last N changes of the first-parent line, a merged branch being one
change: the size of work a stream takes on). A commit that
changes more than ``max_files`` paths (a mass rename, a formatting sweep, a vendored
import) says nothing about which files belong together and would make every pair look
coupled, so it is left out and counted as skipped. The result is cached per base commit
in ``<git common dir>/worktree-runner/cache/``: history below a commit never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from worktree_runner import git
from worktree_runner.errors import BadInput
from worktree_runner.run.state import read_json, write_json_atomic

DEFAULT_COMMITS = 1000
MAX_COMMIT_FILES = 50
CACHE_VERSION = 1
_KEPT_CACHES = 8


@dataclass(frozen=True)
class History:
    """Commits newest first, each as the ids (into ``paths``) of the paths it changed."""

    base_commit: str
    paths: tuple[str, ...]
    commits: tuple[tuple[int, ...], ...]
    times: tuple[int, ...]
    skipped_times: tuple[int, ...] = ()
    max_files: int = MAX_COMMIT_FILES
    first_parent: bool = False  # changes of the first-parent line, a merge as one

    @property
    def skipped(self) -> int:
        return len(self.skipped_times)

    def newer_than(self, stamp: int) -> History:
        kept = [i for i, when in enumerate(self.times) if when >= stamp]
        return replace(self, commits=tuple(self.commits[i] for i in kept),
                       times=tuple(self.times[i] for i in kept),
                       skipped_times=tuple(t for t in self.skipped_times if t >= stamp))

    def to_json(self) -> dict[str, object]:
        return {"version": CACHE_VERSION, "base_commit": self.base_commit,
                "max_files": self.max_files, "first_parent": self.first_parent,
                "paths": list(self.paths),
                "commits": [list(c) for c in self.commits], "times": list(self.times),
                "skipped_times": list(self.skipped_times)}

    @classmethod
    def from_json(cls, doc: object) -> History | None:
        """The history in a cache document, or None if it is not one we wrote."""
        if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
            return None
        try:
            history = cls(base_commit=str(doc["base_commit"]),
                          paths=tuple(str(p) for p in doc["paths"]),
                          commits=tuple(tuple(int(i) for i in c) for c in doc["commits"]),
                          times=tuple(int(t) for t in doc["times"]),
                          skipped_times=tuple(int(t) for t in doc["skipped_times"]),
                          max_files=int(doc["max_files"]),
                          first_parent=doc.get("first_parent") is True)
        except (KeyError, TypeError, ValueError):
            return None
        valid = len(history.times) == len(history.commits) and all(
            0 <= i < len(history.paths) for c in history.commits for i in c)
        return history if valid else None


def read_history(repo: git.Repository, commit: str, limit: int = DEFAULT_COMMITS,
                 since: str | None = None, max_files: int = MAX_COMMIT_FILES,
                 first_parent: bool = False) -> History:
    """The last ``limit`` non-merge commits below ``commit`` (with ``first_parent``, the
    last ``limit`` changes of its first-parent line, a merge as one), only those after
    ``since`` (a date or an age git understands); from the cache when it has them."""
    stamp = _since_stamp(repo, since)
    cache = _cache_file(repo, commit, limit, max_files, first_parent)
    history = History.from_json(read_json(cache))
    if history is None or history.base_commit != commit or history.first_parent != first_parent:
        history = _read_log(repo, commit, limit, max_files, first_parent)
        _store(cache, history)
    return history if stamp is None else history.newer_than(stamp)


def _since_stamp(repo: git.Repository, since: str | None) -> int | None:
    if since is None:
        return None
    stamp = git.approxidate(repo, since)
    if stamp is None:
        raise BadInput(f"cannot read the date '{since}'",
                       hint="write a date such as 2024-05-01 or an age such as 6.months")
    return stamp


def _read_log(repo: git.Repository, commit: str, limit: int, max_files: int,
              first_parent: bool) -> History:
    ids: dict[str, int] = {}
    commits: list[tuple[int, ...]] = []
    times: list[int] = []
    skipped: list[int] = []
    for when, paths in git.commit_changes(repo, commit, limit, max_files, first_parent):
        if len(paths) > max_files:
            skipped.append(when)
        elif paths:
            commits.append(tuple(ids.setdefault(p, len(ids)) for p in dict.fromkeys(paths)))
            times.append(when)
    return History(base_commit=commit, paths=tuple(ids), commits=tuple(commits),
                   times=tuple(times), skipped_times=tuple(skipped), max_files=max_files,
                   first_parent=first_parent)


def _cache_file(repo: git.Repository, commit: str, limit: int, max_files: int,
                first_parent: bool) -> Path:
    line = "-first-parent" if first_parent else ""
    return repo.state_dir / "cache" / f"cochange-{commit}-{limit}-{max_files}{line}.json"


def _store(path: Path, history: History) -> None:
    """Cache ``history``, keeping only the newest few caches; a cache is only a
    shortcut, so failing to write one is not an error."""
    try:
        write_json_atomic(path, history.to_json())
        caches = sorted(path.parent.glob("cochange-*.json"), key=lambda p: p.stat().st_mtime)
        for old in caches[:-_KEPT_CACHES]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
