"""A person's own moves, told from an agent's by the reflog of the checkout they work in.

A commit, merge, reset or pull made in a checkout writes a line (old and new commit,
identity and time, message) into the reflog of the branch it moves and one into that
checkout's HEAD reflog, to the same commit at the same time (the same line, but for a
rebase, which tells its end in other words). The same move made from any other worktree
(an agent's ``git update-ref refs/heads/main``, ``git branch -f``, ``git push . HEAD:main``)
writes the branch's reflog only. An agent's git runs with ``GIT_REFLOG_ACTION`` naming its stream
(:func:`marker`), so what an agent does with git's own commands *in* a person's checkout
is marked there; a line with no message (``update-ref`` without ``-m``) proves nothing.

A move is a person's when every line of the branch's reflog, from the tip the guard saw
last to the tip now, is told so, unmarked, by the HEAD reflog of one checkout that is no
worktree of the run (the branch may be checked out there no more: they switched).
An agent that means to hide can forge reflog lines; ``sandbox: true`` is for such agents
(docs/isolation.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worktree_runner import git, statefs
from worktree_runner.errors import WtrError

MARK = "wtr-agent"  # the start of the GIT_REFLOG_ACTION an agent's git runs with
RECENT = 2000  # lines of a checkout's HEAD reflog looked at: the moves since the last look


def marker(run_id: str, stream: str) -> str:
    """The ``GIT_REFLOG_ACTION`` of a stream's agent: its reflog lines say whose they are."""
    return f"{MARK} {run_id}/{stream}"


@dataclass(frozen=True)
class Line:
    """One reflog line."""

    old: str
    new: str
    who: str  # "Name <email> <seconds> <zone>"
    message: str

    @property
    def by_hand(self) -> bool:
        return bool(self.message) and not self.message.startswith(MARK)

    def _when(self) -> tuple[str, int | None]:
        identity, _, stamp = self.who.rpartition(">")
        seconds = stamp.split()[0] if stamp.split() else ""
        return identity, int(seconds) if seconds.isdigit() else None

    def told_by(self, head: Line) -> bool:
        """Whether ``head``, a line of a checkout's HEAD reflog, is this move of a branch
        made there: to the same commit, by the same person, at the same time (a rebase
        tells its end in other words there, a second later at most)."""
        (me, mine), (them, theirs) = self._when(), head._when()
        return (self.by_hand and head.by_hand and head.new == self.new and me == them
                and mine is not None and theirs is not None and abs(mine - theirs) <= 2)


def _lines(path: Path) -> list[Line]:
    try:
        text = statefs.read_text(path)
    except OSError:
        return []
    found = []
    for row in text.splitlines():
        head, _, message = row.partition("\t")
        parts = head.split(" ", 2)
        if len(parts) == 3:
            found.append(Line(parts[0], parts[1], parts[2], message))
    return found


def _chain(lines: list[Line], old: str, new: str) -> list[Line]:
    """The newest lines that lead from ``old`` to ``new``, one move after another; []
    when the reflog does not (it was not kept, or a move skipped it)."""
    chain: list[Line] = []
    at = new
    for line in reversed(lines):
        if at == old:
            break
        if line.new != at:
            return []
        chain.append(line)
        at = line.old
    return chain if at == old and chain else []


def moved_by_hand(repo: git.Repository, ref: str, old: str, new: str,
                  worktrees_root: Path) -> Path | None:
    """The checkout through which a person moved branch ``ref`` from ``old`` to ``new``,
    or None when an agent may have (or nothing shows who did)."""
    if not ref.startswith("refs/heads/"):
        return None
    chain = _chain(_lines(repo.common_dir / "logs" / ref), old, new)
    if not chain:
        return None
    for worktree in git.list_worktrees(repo):
        if (worktree.bare or worktree.prunable or not worktree.path.is_dir()
                or worktree.path.is_relative_to(worktrees_root)):
            continue
        try:
            head = _lines(git.git_dir_of(worktree.path) / "logs" / "HEAD")[-RECENT:]
        except (WtrError, OSError):  # a checkout git cannot read now tells nothing
            continue
        if all(any(line.told_by(h) for h in head) for line in chain):
            return worktree.path
    return None


def switched_by_hand(repo: git.Repository, old: str, new: str) -> bool:
    """Whether the main checkout's HEAD went from naming ``old`` to naming ``new`` (branch
    names, ``refs/heads/...``) by a person's own checkout: its newest HEAD reflog line."""
    lines = _lines(repo.common_dir / "logs" / "HEAD")
    if not lines or not lines[-1].by_hand:
        return False
    short = [name.removeprefix("refs/heads/") for name in (old, new)]
    return (lines[-1].message == f"checkout: moving from {short[0]} to {short[1]}"
            and git.ref_commit(repo, new) == lines[-1].new)
