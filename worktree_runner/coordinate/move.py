"""Bringing a follow-up's result into the branch of the stream that asked for it.

The asking stream depends on its follow-up: once the follow-up succeeded, the asker's own
commits are replayed onto a base that holds the follow-up's result (as ``wtr sync`` does
onto the target), so what it builds from then on builds on the change it asked for, and
the merge stage replays only its own commits after the follow-up's.
"""

from __future__ import annotations

from pathlib import Path

from worktree_runner import git
from worktree_runner.errors import WtrError
from worktree_runner.merge.sync import SyncConflict, move_onto, synced_base
from worktree_runner.run.state import RunStore, Status


def bring_in(repo: git.Repository, store: RunStore, name: str, follow_up: str) -> str:
    """Move stream ``name`` onto the result of ``follow_up``; what happened, in a sentence.
    Raises WtrError when it cannot (a conflict, files in the way): nothing changes then."""
    record = store.record
    stream, done = record.streams[name], record.streams[follow_up]
    if done.status not in (Status.SUCCEEDED.value, Status.MERGED.value) or not done.head_commit:
        raise WtrError(f"follow-up '{follow_up}' has no result to bring in ({done.status})")
    worktree = Path(stream.worktree) if stream.worktree else None
    if worktree is None or not worktree.exists():
        raise WtrError(f"stream '{name}' has no worktree to bring '{follow_up}' into")
    base = synced_base(store, name) or stream.base_commit or record.base_commit
    result = done.head_commit
    if git.is_ancestor(repo, result, base):
        return f"your branch already holds the result of '{follow_up}'"
    onto = result if git.is_ancestor(repo, base, result) else _merged(repo, base, result,
                                                                      name, follow_up)
    try:
        head = move_onto(repo, store, name, worktree, base, onto, f"'{follow_up}'")
    except SyncConflict as exc:
        raise WtrError(f"your commits conflict with the result of '{follow_up}' in "
                       f"{', '.join(exc.files)}; your branch was left as it was") from None
    store.event("request.brought_in", stream=name, follow_up=follow_up, base=onto, head=head)
    return (f"the result of '{follow_up}' is now in your branch (your commits were replayed "
            f"onto it; HEAD {head[:12]})")


def _merged(repo: git.Repository, base: str, result: str, name: str, follow_up: str) -> str:
    merged = git.merge_trees(repo, base, result)
    if merged.tree is None:
        raise WtrError(f"the base of '{name}' and the result of '{follow_up}' conflict in "
                       f"{', '.join(merged.conflicts)}; your branch was left as it was")
    return git.commit_tree(repo, merged.tree, [base, result],
                           f"wtr: start of {name} from its base and {follow_up}")
