"""Refs, commits and objects: resolving and moving refs, history queries, remotes, and the
object reader and writer of the in-memory replay."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worktree_runner.errors import UnknownRef
from worktree_runner.git.door import (
    GitResult,
    Repository,
    clean_env,
    git_executable,
    identity_env,
    run_git,
)


def resolve_commit(repo: Repository, ref: str) -> str:
    result = repo.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
                      check=False)
    if not result.ok or not result.stdout.strip():
        raise UnknownRef(
            f"'{ref}' does not name a commit in {repo.toplevel}",
            hint="check the spelling, or fetch it first",
        )
    return result.stdout.strip()


def current_branch(repo: Repository, cwd: Path | None = None) -> str | None:
    """The branch checked out in ``cwd`` (default: the user's worktree); None if detached."""
    result = repo.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False,
                      cwd=cwd or repo.toplevel)
    return result.stdout.strip() or None


def branch_exists(repo: Repository, branch: str) -> bool:
    return repo.git("show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False).ok


def tracked_files(repo: Repository, commit: str) -> list[str]:
    """Every file path in ``commit``'s tree, in git's order.

    Listed from the main checkout's index when it holds exactly that tree (the usual case:
    the base is the checked-out branch): ``diff-index --cached`` answers from the index's
    cached tree hashes, and reading a million entries from the index costs a tenth of
    inflating every tree object (``ls-tree -r``). An added-with-intent or unmerged entry
    counts as a difference, so the listing is the tree's or comes from the tree itself.
    """
    if repo.git("diff-index", "--cached", "--quiet", commit, "--", check=False).ok:
        out = repo.git("ls-files", "-z", "--cached", "--full-name").stdout
    else:
        out = repo.git("ls-tree", "-r", "-z", "--name-only", "--full-tree", commit).stdout
    return [name for name in out.split("\0") if name]


def approxidate(repo: Repository, text: str) -> int | None:
    """The time (seconds since the epoch) git reads in ``text`` ("2024-05-01", "3.months"),
    or None when git cannot read it (git then answers with the current time)."""
    out = repo.out("rev-parse", f"--since={text}")
    stamp = int(out.removeprefix("--max-age=")) if out.startswith("--max-age=") else None
    if stamp is None or (abs(stamp - time.time()) < 2 and text.strip().lower() != "now"):
        return None
    return stamp


def ref_commit(repo: Repository, ref: str) -> str | None:
    result = repo.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return result.stdout.strip() or None


def independent(repo: Repository, commits: Sequence[str]) -> list[str]:
    """The commits none of the others contain, in the given order."""
    unique = list(dict.fromkeys(commits))
    if len(unique) < 2:
        return unique
    kept = set(repo.out("merge-base", "--independent", *unique).split())
    return [c for c in unique if c in kept]


def commit_tree(repo: Repository, tree: str, parents: Sequence[str], message: str) -> str:
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    return run_git([*args, "-m", message], repo.root, env=identity_env(repo)).stdout.strip()


def head_of(worktree: Path) -> str:
    return run_git(["rev-parse", "HEAD"], worktree).stdout.strip()


def is_ancestor(repo: Repository, older: str, newer: str) -> bool:
    return repo.git("merge-base", "--is-ancestor", older, newer, check=False).ok


def merge_base(repo: Repository, one: str, other: str) -> str | None:
    """The best common ancestor of two commits (None: they share no history)."""
    return repo.git("merge-base", one, other, check=False).stdout.strip() or None


def update_ref(repo: Repository, ref: str, new: str, old: str | None = None,
               message: str = "worktree-runner") -> bool:
    """Point ``ref`` at ``new``, only if it still points at ``old`` (compare-and-swap)."""
    args = ["update-ref", "-m", message, ref, new]
    if old is not None:
        args.append(old)
    return repo.git(*args, check=False).ok


def delete_refs_under(repo: Repository, prefix: str) -> None:
    refs = repo.out("for-each-ref", "--format=%(refname)", prefix).split()
    if refs:
        run_git(["update-ref", "--stdin"], repo.root,
                stdin="".join(f"delete {ref}\n" for ref in refs))


def commits_between(repo: Repository, base: str, head: str) -> list[str]:
    """The commits a rebase of ``base..head`` replays, oldest first (merges are dropped)."""
    out = repo.out("rev-list", "--reverse", "--no-merges", f"{base}..{head}")
    return out.split()


def tree_of(repo: Repository, commit: str) -> str:
    if FULL_SHA.fullmatch(commit):
        return _tree_of_commit(repo, commit)
    return repo.out("rev-parse", f"{commit}^{{tree}}")


FULL_SHA = re.compile(r"[0-9a-f]{40}")


@functools.lru_cache(maxsize=4096)
def _tree_of_commit(repo: Repository, commit: str) -> str:
    """A commit's tree never changes: asked once per process."""
    return repo.out("rev-parse", f"{commit}^{{tree}}")


def first_parent(repo: Repository, commit: str) -> str:
    return repo.out("rev-parse", f"{commit}^")


def create_ref(repo: Repository, ref: str, commit: str) -> bool:
    """Create ``ref`` at ``commit``; False (and nothing changed) if it exists already."""
    return update_ref(repo, ref, commit, old="0" * 40)


def refs_under(repo: Repository, prefix: str) -> dict[str, str]:
    out = repo.out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def reflog(worktree: Path, ref: str = "HEAD") -> list[str]:
    """Every commit ``ref`` pointed at, newest first, as seen from ``worktree`` (HEAD is
    that worktree's own); [] when there is no reflog."""
    result = run_git(["reflog", "show", "--format=%H", ref, "--"], worktree, check=False)
    return result.stdout.split() if result.ok else []


# Refs that keep commits for good; merge pins are pruned with their run, so they do not count.
DURABLE_REFS = ("--branches", "--tags", "--remotes", "--glob=refs/worktree-runner/rescue",
                "--glob=refs/worktree-runner/archive")


def unreachable_tips(repo: Repository, commits: Sequence[str]) -> list[str]:
    """The newest of ``commits``' history that no branch, tag or rescue ref reaches."""
    if not commits:
        return []
    out = repo.out("rev-list", "--parents", "--ignore-missing", *commits, "--not", *DURABLE_REFS)
    lost = [line.split() for line in out.splitlines() if line]
    parents = {parent for _, *rest in lost for parent in rest}
    return [commit for commit, *_ in lost if commit not in parents]


def unique_commits(repo: Repository, upstream: str, head: str, base: str) -> list[str]:
    """Commits of ``base..head`` with no patch-equivalent in ``upstream`` (git cherry)."""
    out = repo.out("cherry", upstream, head, base)
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def delete_branch(repo: Repository, branch: str, expected: str) -> bool:
    """Delete ``branch`` only if it still points at ``expected``."""
    return repo.git("update-ref", "-d", f"refs/heads/{branch}", expected, check=False).ok


def user_refs(repo: Repository) -> dict[str, str]:
    """Every branch and tag, by full name, with the object it points at."""
    out = repo.out("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def main_checkout_head(repo: Repository) -> str:
    """What HEAD of the main checkout is: the branch it names, else the commit. Read from
    its file (the guard looks after every stream; git writes HEAD by rename, so a reader
    sees the old or the new content)."""
    try:
        text = (repo.common_dir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    if text.startswith("ref: "):
        return text.removeprefix("ref: ").strip()
    if FULL_SHA.fullmatch(text):
        return text
    result = run_git(["symbolic-ref", "--quiet", "HEAD"], repo.root, check=False)
    if result.ok:
        return result.stdout.strip()
    return run_git(["rev-parse", "--verify", "--quiet", "HEAD"], repo.root,
                   check=False).stdout.strip()


def hooks_dir(repo: Repository) -> Path:
    """Where git looks for hooks in this repository (core.hooksPath honoured)."""
    path = run_git(["rev-parse", "--path-format=absolute", "--git-path", "hooks"],
                   repo.root, check=False, hooks_off=False).stdout.strip()
    return Path(path) if path else repo.common_dir / "hooks"


def remote_names(repo: Repository) -> list[str]:
    return repo.out("remote").split()


def remote_url(repo: Repository, remote: str) -> str:
    return repo.out("remote", "get-url", "--", remote)


def upstream_remote(repo: Repository, branch: str) -> str | None:
    """The remote ``branch`` tracks (``branch.<name>.remote``), if it is set."""
    result = repo.git("config", "--get", f"branch.{branch}.remote", check=False)
    remote = result.stdout.strip()
    return remote if result.ok and remote and remote != "." else None


def remote_branch_commit(repo: Repository, remote: str, branch: str) -> str | None:
    """Where ``branch`` points on ``remote`` now (one round trip), None if it is not there."""
    out = run_git(["ls-remote", "--heads", "--", remote, f"refs/heads/{branch}"], repo.root).stdout
    for line in out.splitlines():
        commit, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return commit
    return None


def push_branch(repo: Repository, remote: str, branch: str, commit: str | None,
                expected: str | None, also: Sequence[str] = ()) -> GitResult:
    """Set (or with ``commit`` None, delete) ``branch`` on ``remote``, only if it is still at
    ``expected`` there (None: only if it does not exist): a lease, never a blind force.
    ``also``: more refspecs, pushed in the same (atomic) push: all or none of them land.
    Hooks are not run: a pre-push hook may have been planted by an agent."""
    ref = f"refs/heads/{branch}"
    return repo.git("push", "--porcelain", "--no-verify", *(["--atomic"] if also else []),
                    f"--force-with-lease={ref}:{expected or ''}",
                    "--", remote, f"{commit or ''}:{ref}", *also, check=False)


def has_commit(repo: Repository, commit: str) -> bool:
    """Whether the commit is in the repository's object store (no network)."""
    return repo.git("cat-file", "-e", f"{commit}^{{commit}}", check=False).ok


def has_merge_commits(repo: Repository, base: str, head: str) -> bool:
    return bool(repo.out("rev-list", "--merges", "--max-count=1", f"{base}..{head}"))


def commit_author_env(repo: Repository, commit: str) -> dict[str, str]:
    """The author of ``commit`` as GIT_AUTHOR_* variables (for a commit made in its name)."""
    name, email, date = repo.out("log", "-1", "--format=%an%x00%ae%x00%ad", "--date=raw",
                                 commit).split("\0")
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}


def squash_commit(repo: Repository, base: str, head: str, message: str) -> str:
    """One commit on ``base`` holding ``head``'s tree: the net change of ``base..head``."""
    env = {**identity_env(repo), **commit_author_env(repo, head)}
    args = ["commit-tree", tree_of(repo, head), "-p", base, "-F", "-"]
    return run_git(args, repo.root, stdin=message, env=env).stdout.strip()


def exists_at(repo: Repository, commit: str, path: str) -> bool:
    """Whether ``path`` is in ``commit``'s tree."""
    return repo.git("cat-file", "-e", f"{commit}:{path}", check=False).ok


def blob_at(repo: Repository, tree: str, path: str) -> bytes | None:
    result = subprocess.run([git_executable(), "cat-file", "blob", f"{tree}:{path}"],
                            cwd=repo.root, capture_output=True, env=clean_env(), check=False)
    return result.stdout if result.returncode == 0 else None


class ObjectReader:
    """Many objects read through one persistent ``git cat-file --batch``.

    GitPython's object database does the reading (imported here, on first use: never on
    the start-up path of a command an agent runs). Its parser knows SHA-1 object ids
    only, so a SHA-256 repository is read through a ``cat-file --batch`` of our own.
    """

    def __init__(self, repo: Repository) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._gitpython: Any = None
        if object_format(repo) == "sha1":
            import git as gitpython  # GitPython

            self._gitpython = gitpython.Git(str(repo.root))
            wanted = clean_env()
            self._gitpython.update_environment(
                GIT_TERMINAL_PROMPT="0",
                **{key: None for key in os.environ if key not in wanted})
        else:
            self._proc = subprocess.Popen(
                [git_executable(), "cat-file", "--batch"], cwd=repo.root, env=clean_env(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def read(self, name: str) -> tuple[str, bytes]:
        """The type and content of object ``name`` (UnknownRef if there is none)."""
        if self._gitpython is not None:
            try:
                _, kind, _, data = self._gitpython.get_object_data(name)
            except ValueError:
                raise UnknownRef(f"no object {name}") from None
            return kind.decode() if isinstance(kind, bytes) else str(kind), bytes(data)
        assert self._proc is not None and self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(name.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3:
            raise UnknownRef(f"no object {name}")
        data = self._proc.stdout.read(int(header[2]) + 1)[:-1]
        return header[1].decode(), data

    def close(self) -> None:
        if self._gitpython is not None:
            self._gitpython.clear_cache()  # ends its cat-file processes
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def object_format(repo: Repository) -> str:
    return _object_format(repo.root)


@functools.cache
def _object_format(root: Path) -> str:
    result = run_git(["rev-parse", "--show-object-format"], root, check=False)
    return result.stdout.strip() or "sha1"


def update_refs(repo: Repository, refs: Mapping[str, str]) -> None:
    """Point several refs at once (one transaction, one process)."""
    if refs:
        run_git(["update-ref", "--stdin"], repo.root,
                stdin="".join(f"update {ref} {oid}\n" for ref, oid in refs.items()))


def write_commit_object(repo: Repository, data: bytes) -> str:
    """Store a commit object as a loose object, as git itself does (zlib, then rename)."""
    import hashlib
    import zlib

    if object_format(repo) != "sha1":
        return run_git(["hash-object", "-t", "commit", "-w", "--stdin"], repo.root,
                       stdin=data.decode("utf-8", "surrogateescape")).stdout.strip()
    raw = b"commit %d\0" % len(data) + data
    oid = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
    folder = repo.common_dir / "objects" / oid[:2]
    path = folder / oid[2:]
    if not path.exists():
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="tmp_obj_")
        with os.fdopen(fd, "wb") as handle:
            handle.write(zlib.compress(raw))
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    return oid


def committer_ident(repo: Repository) -> str:
    """``Name <email> seconds zone``: who commits now (GIT_COMMITTER_* and config honoured)."""
    return run_git(["var", "GIT_COMMITTER_IDENT"], repo.root,
                   env=identity_env(repo)).stdout.strip()
