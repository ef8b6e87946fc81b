"""Rescue refs: where work that exists nowhere else is saved, and how they are named.

``refs/worktree-runner/rescue/<run>/<stream>`` holds a worktree's uncommitted work; a
later save never overwrites it but becomes ``<stream>@2``, ``<stream>@3``, ...
``refs/worktree-runner/rescue/<run>/<stream>@commit-<id>`` holds a commit an agent made
and then hid (detached HEAD, reset, amend, a deleted branch). Stream names cannot hold
``@``, so these names never collide with another stream's.
"""

from __future__ import annotations

from collections.abc import Sequence

from worktree_runner import git
from worktree_runner.errors import WtrError

RESCUE_PREFIX = "refs/worktree-runner/rescue"
ARCHIVE_PREFIX = "refs/worktree-runner/archive"


def archive_name(run: str, name: str) -> str:
    return f"{ARCHIVE_PREFIX}/{run}/{name}"


def pin_archive(repo: git.Repository, run: str, name: str, head: str) -> str:
    """``refs/worktree-runner/archive/<run>/<stream>`` at ``head``: an existing one at
    ``head`` is kept; one at another commit is never moved (``<stream>@2``, ... instead)."""
    base = archive_name(run, name)
    for number in range(1, 100):
        ref = base if number == 1 else f"{base}@{number}"
        if git.create_ref(repo, ref, head) or git.ref_commit(repo, ref) == head:
            return ref
    raise WtrError(f"could not pin the tip of {name} under {base}",
                   hint="see 'git for-each-ref refs/worktree-runner/archive/' and try again")


def pin_hidden(repo: git.Repository, run: str, name: str, candidates: Sequence[str]) -> list[str]:
    """Save the newest of ``candidates``' commits that no branch, tag or rescue ref holds;
    the refs that hold them now (an existing ref named by the commit is kept as it is)."""
    refs = []
    for tip in git.unreachable_tips(repo, list(dict.fromkeys(candidates))):
        ref = f"{RESCUE_PREFIX}/{run}/{name}@commit-{tip[:12]}"
        git.create_ref(repo, ref, tip)
        refs.append(ref)
    return refs


def save_uncommitted(repo: git.Repository, run: str, name: str, commit: str) -> tuple[str, bool]:
    """A rescue ref for a snapshot ``commit``: an existing one with the same content, else a
    new one (``<name>``, ``<name>@2``, ...); True if it is new. An existing ref never moves."""
    base = f"{RESCUE_PREFIX}/{run}/{name}"
    tree = git.tree_of(repo, commit)
    for _ in range(20):
        existing = {ref: sha for ref, sha in git.refs_under(repo, f"{RESCUE_PREFIX}/{run}/").items()
                    if ref == base or (ref.startswith(f"{base}@")
                                       and not ref.startswith(f"{base}@commit-"))}
        for ref, sha in existing.items():
            if git.tree_of(repo, sha) == tree:
                return ref, False
        number = 1
        while (ref := base if number == 1 else f"{base}@{number}") in existing:
            number += 1
        if git.create_ref(repo, ref, commit):
            return ref, True
    raise WtrError(f"could not create a rescue ref for {name} under {base}",
                   hint="see 'git for-each-ref refs/worktree-runner/rescue/' and try again")
