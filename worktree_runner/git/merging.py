"""Merging without a checkout (``git merge-tree``), rebases and merges in a worktree,
and recorded resolutions (rerere)."""

from __future__ import annotations

import functools
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from worktree_runner.errors import GitFailed
from worktree_runner.git.door import (
    GitResult,
    Repository,
    clean_env,
    git_executable,
    identity_env,
    run_git,
)
from worktree_runner.git.refs import commit_tree, tree_of


@dataclass(frozen=True)
class TreeMerge:
    tree: str | None
    conflicts: list[str]
    written: str | None = None  # the tree merge-tree wrote, conflict markers included


def merge_trees(repo: Repository, ours: str, theirs: str) -> TreeMerge:
    """Merge two commits without touching any worktree or index (git merge-tree)."""
    result = run_git(
        ["merge-tree", "--write-tree", "--name-only", "-z", "--no-messages", ours, theirs],
        repo.root,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise GitFailed(["merge-tree", ours, theirs], result.returncode, result.stderr)
    tree, _, rest = result.stdout.partition("\0")
    conflicts = [name for name in rest.split("\0") if name] if result.returncode == 1 else []
    return TreeMerge(tree=tree if result.returncode == 0 else None, conflicts=conflicts,
                     written=tree or None)


REBASE_CONFIG = ("-c", "rerere.enabled=true", "-c", "rerere.autoupdate=true",
                 "-c", "core.editor=true", "-c", "advice.mergeConflict=false")


def rebase_onto(repo: Repository, worktree: Path, onto: str, base: str, head: str) -> GitResult:
    """Replay ``base..head`` onto ``onto`` in ``worktree`` (detached); never moves a branch."""
    return run_git([*REBASE_CONFIG, "rebase", "--quiet", "--onto", onto, base, head], worktree,
                   check=False, env=identity_env(repo))


def rebase_continue(repo: Repository, worktree: Path, remember: bool = True) -> GitResult:
    """Go on with a stopped rebase; ``remember=False``: rerere records no resolution (one an
    agent proposed must not be replayed later as if a human had made it)."""
    config = REBASE_CONFIG if remember else (*REBASE_CONFIG, "-c", "rerere.enabled=false")
    return run_git([*config, "rebase", "--continue"], worktree, check=False,
                   env=identity_env(repo))


def merge_in_worktree(repo: Repository, worktree: Path, commit: str, message: str) -> GitResult:
    """Merge ``commit`` into the branch checked out in ``worktree``; on a conflict the merge
    is left in progress there for a human (a non-zero exit is an answer)."""
    return run_git(["-c", "core.editor=true", "-c", "advice.mergeConflict=false", "merge",
                    "--no-ff", "--quiet", "-m", message, commit], worktree, check=False,
                   env=identity_env(repo))


def merge_in_progress(worktree: Path) -> bool:
    return run_git(["rev-parse", "--verify", "--quiet", "MERGE_HEAD"], worktree,
                   check=False).ok


def rebase_in_progress(worktree: Path) -> bool:
    for name in ("rebase-merge", "rebase-apply"):
        path = run_git(["rev-parse", "--git-path", name], worktree).stdout.strip()
        if (worktree / path).exists():
            return True
    return False


def rebase_stopped_at(worktree: Path) -> str | None:
    result = run_git(["rev-parse", "--verify", "--quiet", "REBASE_HEAD"], worktree, check=False)
    return result.stdout.strip() or None


def unmerged_files(worktree: Path) -> list[str]:
    out = run_git(["diff", "--name-only", "-z", "--diff-filter=U"], worktree).stdout
    return sorted({name for name in out.split("\0") if name})


def merge_ff_only(repo: Repository, worktree: Path, commit: str) -> GitResult:
    return run_git(["merge", "--ff-only", "--quiet", commit], worktree, check=False)


def reset_keep(worktree: Path, commit: str) -> GitResult:
    return run_git(["reset", "--keep", "--quiet", commit], worktree, check=False)


def contains_change(repo: Repository, target: str, base: str, head: str) -> bool:
    """True if ``target``'s tree already holds the net change ``base`` -> ``head``: merging
    that change into it (three-way, from ``base``) would change nothing."""
    if tree_of(repo, base) == tree_of(repo, head):
        return True
    target_tree = tree_of(repo, target)
    ours = _probe(repo, target_tree, base, "wtr: target, for a content check")
    theirs = _probe(repo, tree_of(repo, head), base, "wtr: stream, for a content check")
    merged = merge_trees(repo, ours, theirs)
    return merged.tree == target_tree


@functools.lru_cache(maxsize=256)
def _probe(repo: Repository, tree: str, parent: str, message: str) -> str:
    """A throwaway commit of ``tree`` on ``parent`` (one per pair and process: clean checks
    every stream of a run against the same target)."""
    return commit_tree(repo, tree, [parent], message)


def net_merge(repo: Repository, onto: str, base: str, head: str) -> TreeMerge:
    """``base..head``'s net change applied to ``onto``: a three-way merge whose base is
    ``base`` (git 2.39's merge-tree takes no --merge-base, so a stand-in commit with
    ``onto``'s tree and ``base`` as parent makes ``base`` the merge base)."""
    stand_in = commit_tree(repo, tree_of(repo, onto), [base], "wtr: stand-in")
    return merge_trees(repo, stand_in, head)


def update_checkout(worktree: Path, old: str, new: str) -> GitResult:
    """Bring the index and files of a clean checkout from ``old``'s tree to ``new``'s
    (its branch already points at ``new``); refuses to overwrite untracked files."""
    return run_git(["read-tree", "-m", "-u", old, new], worktree, check=False)


def rerere_dir(repo: Repository) -> Path:
    return repo.common_dir / "rr-cache"


def merge_file(current: bytes, base: bytes, other: bytes) -> bytes | None:
    """A three-way merge of file contents (git merge-file -p); None on a conflict."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in (("current", current), ("base", base), ("other", other)):
            (Path(tmp) / name).write_bytes(data)
            paths.append(str(Path(tmp) / name))
        result = subprocess.run([git_executable(), "merge-file", "-p", *paths], cwd=tmp,
                                capture_output=True, env=clean_env(), check=False)
    return result.stdout if result.returncode == 0 else None


def replace_files(repo: Repository, tree: str, files: Mapping[str, bytes]) -> str:
    """``tree`` with the given files' contents replaced (through a temporary index)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run_git(["read-tree", tree], repo.root, env=env)
        for path, data in files.items():
            (Path(tmp) / "blob").write_bytes(data)
            blob = run_git(["hash-object", "-w", "--", str(Path(tmp) / "blob")],
                           repo.root).stdout.strip()
            mode = run_git(["ls-files", "-s", "--", path], repo.root, env=env).stdout.split()
            run_git(["update-index", "--cacheinfo", f"{mode[0] if mode else '100644'},{blob},"
                     f"{path}"], repo.root, env=env)
        return run_git(["write-tree"], repo.root, env=env).stdout.strip()
