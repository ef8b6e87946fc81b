"""The moves of a user's branch that wtr makes itself, as the guard (run/guard.py) sees them.

A landing or an undo moves the target: each move is recorded in the run's merge state
before it is made (and forgotten if the compare-and-swap refuses it), and the guard
exempts exactly those moves, nothing else that ends on a commit of a merge. The move and
the update of the target's checkout that follows it happen under one lock the guard also
holds while it looks, so a look never finds a checked-out target half way from one
landing to the next.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from filelock import FileLock

from worktree_runner import git

_THREAD_LOCK = threading.Lock()


@contextmanager
def landing_lock(repo: git.Repository) -> Iterator[None]:
    """Held while a target and its checkout move, and while the guard looks."""
    repo.state_dir.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, FileLock(str(repo.state_dir / "landing.lock")):
        yield


@dataclass(frozen=True)
class Move:
    ref: str
    old: str
    new: str

    def to_json(self) -> dict[str, str]:
        return {"ref": self.ref, "old": self.old, "new": self.new}


def recorded(merge: Any) -> list[Move]:
    """The moves a run's merge section records (none in a section written before them)."""
    entries = merge.get("moves") if isinstance(merge, dict) else None
    if not isinstance(entries, list):
        return []
    fields = ("ref", "old", "new")
    return [Move(e["ref"], e["old"], e["new"]) for e in entries
            if isinstance(e, dict) and all(isinstance(e.get(k), str) for k in fields)]


def explains(moves: Iterable[Move], ref: str, old: str | None, new: str | None) -> bool:
    """``ref`` can have gone from ``old`` to ``new`` by these moves alone."""
    if old is None or new is None:
        return False  # wtr never creates nor deletes a user's branch
    steps: dict[str, set[str]] = {}
    for move in moves:
        if move.ref == ref:
            steps.setdefault(move.old, set()).add(move.new)
    reached, todo = {old}, [old]
    while todo:
        for commit in steps.get(todo.pop(), ()):
            if commit not in reached:
                reached.add(commit)
                todo.append(commit)
    return new in reached and new != old
