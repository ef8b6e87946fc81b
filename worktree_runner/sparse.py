"""Sparse streams: a worktree that checks out only the stream's files, shared paths and
``context`` (what it reads or builds with), not the whole repository.

Cone mode (git's fast sparse mode, whole folders) is used when every pattern names a
folder: ``src/api/**``, ``/docs/``, or a literal path that is a folder in the stream's base.
In cone mode git also checks out the files at the top of the repository and those directly
in each parent folder. Any other pattern (a glob, a single file, a negation) switches the
stream to non-cone mode, where the patterns are matched exactly as in ``files``.

The sparse patterns only decide what is on disk. Ownership is checked on the commits,
as for any stream: a file written outside the sparse set is committed and then refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from worktree_runner import git
from worktree_runner.plan.model import Plan, Stream

_GLOB = re.compile(r"[*?\[\]\\!]")


def patterns(stream: Stream) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*stream.files, *stream.shared, *stream.context)))


def cone_folders(repo: git.Repository, commit: str, given: Sequence[str]) -> list[str] | None:
    """The folders for cone mode, or None when some pattern is not a folder."""
    folders: list[str] = []
    literals: list[str] = []
    for pattern in given:
        body = pattern.removesuffix("/**") if pattern.endswith("/**") else pattern
        anchored = body.startswith("/") or "/" in body.rstrip("/") or body != pattern
        body = body.strip("/")
        if not body or not anchored or _GLOB.search(body):
            return None
        if pattern.endswith(("/**", "/")):
            folders.append(body)
        else:
            literals.append(body)
    if literals:
        out = repo.git("ls-tree", "--full-tree", "-z", commit, "--", *literals).stdout
        kinds = {entry.split("\t", 1)[1]: entry.split()[1]
                 for entry in out.split("\0") if "\t" in entry}
        if any(kinds.get(path, "tree") != "tree" for path in literals):
            return None  # a single file: cone mode would bring its whole folder
        folders += literals
    return folders


def enable(repo: git.Repository, plan: Plan) -> None:
    """Turn on per-worktree config if some stream is sparse: sparse settings must stay in
    that stream's worktree. Done once, before the run starts watching the shared config."""
    if not any(plan.is_sparse(stream) for stream in plan.streams):
        return
    found = repo.git("config", "--type=bool", "--get", "extensions.worktreeConfig", check=False)
    if found.stdout.strip() != "true":
        with git.repository_lock(repo):
            repo.git("config", "extensions.worktreeConfig", "true")


def restrict(repo: git.Repository, path: Path, stream: Stream, commit: str) -> None:
    """Limit the worktree at ``path`` (registered, not yet checked out) to the stream's
    sparse set; the checkout that follows writes only those files."""
    wanted = patterns(stream)
    folders = cone_folders(repo, commit, wanted)
    # In cone mode the index too can be sparse (a folder outside the set is one entry, not
    # one per file), so the checkout and every later status cost what the set holds.
    mode = ["--cone", "--sparse-index"] if folders is not None else ["--no-cone"]
    lines = folders if folders is not None else list(wanted)
    with git.repository_lock(repo):  # it writes the worktree's config and sparse file
        git.run_git(["sparse-checkout", "set", *mode, "--stdin"], path,
                    stdin="".join(f"{line}\n" for line in lines))
