"""Replaying a stream's commits onto the integration tip in the object database only.

It makes what ``git rebase --onto TIP BASE HEAD`` makes, without a worktree or index:
the same commits in the same order, each with its own tree change, author, date and
message, committed by whoever commits now. As the rebase does, it reuses a commit whose
parent is already the tip (fast-forward), keeps a commit that was empty to begin with,
and drops one that becomes empty. Each pick is ``git merge-tree`` against a stand-in
commit (see predict.py); commits are written as loose objects and read through one
``cat-file --batch`` process. Anything it cannot decide (a conflict) it leaves to the
rebase in a worktree, by returning no tip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worktree_runner import git
from worktree_runner.errors import UnknownRef


@dataclass(frozen=True)
class CommitInfo:
    tree: str
    parents: list[str]
    author: bytes
    extra: bytes      # headers kept as they were (encoding)
    message: bytes


@dataclass
class Replayed:
    tip: str | None                       # None: a conflict; replay it in a worktree
    conflicts: list[str] = field(default_factory=list)
    commits: int = 0


class MemoryReplay:
    def __init__(self, repo: git.Repository) -> None:
        self.repo = repo
        self.reader = git.ObjectReader(repo)
        self.committer = git.committer_ident(repo).encode()
        self._info: dict[str, CommitInfo] = {}

    def close(self) -> None:
        self.reader.close()

    def info(self, oid: str) -> CommitInfo:
        if oid not in self._info:
            kind, data = self.reader.read(oid)
            if kind != "commit":
                raise UnknownRef(f"{oid} is a {kind}, not a commit")
            self._info[oid] = _parse(data)
        return self._info[oid]

    def write(self, tree: str, parent: str, author: bytes, extra: bytes, message: bytes) -> str:
        data = (b"tree %s\nparent %s\nauthor %s\ncommitter %s\n%s\n%s"
                % (tree.encode(), parent.encode(), author, self.committer, extra, message))
        return git.write_commit_object(self.repo, data)

    def history(self, base: str, head: str) -> tuple[list[str], bool]:
        """The commits of ``base..head`` a rebase replays, oldest first, and whether the
        range holds merge commits (which a rebase drops)."""
        out = self.repo.out("rev-list", "--reverse", "--parents", f"{base}..{head}")
        rows = [line.split() for line in out.splitlines()]
        return [row[0] for row in rows if len(row) == 2], any(len(row) > 2 for row in rows)

    def net_tree(self, onto: str, base: str, head: str) -> str | None:
        """The tree of ``base..head``'s net change on ``onto`` (None: it conflicts)."""
        stand_in = self.write(self.info(onto).tree, base, self.committer, b"",
                              b"wtr: stand-in\n")
        return git.merge_trees(self.repo, stand_in, head).tree

    def replay(self, onto: str, base: str, head: str,
               commits: list[str] | None = None) -> Replayed:
        tip, done = onto, 0
        if commits is None:
            commits = self.history(base, head)[0]
        for oid in commits:
            commit = self.info(oid)
            parent = commit.parents[0]
            done += 1
            if tip == parent:  # the sequencer fast-forwards over a commit already on the tip
                tip = oid
                continue
            if commit.tree == self.info(parent).tree:  # empty from the start: kept
                tree = self.info(tip).tree
            else:
                stand_in = self.write(self.info(tip).tree, parent, self.committer, b"",
                                      b"wtr: stand-in\n")
                merged = git.merge_trees(self.repo, stand_in, oid)
                if merged.tree is None:
                    return Replayed(None, merged.conflicts, done)
                if merged.tree == self.info(tip).tree:  # became empty: dropped
                    continue
                tree = merged.tree
            tip = self.write(tree, tip, commit.author, commit.extra, commit.message)
        return Replayed(tip, [], done)


def _parse(data: bytes) -> CommitInfo:
    head, _, message = data.partition(b"\n\n")
    tree, author, parents, extra = "", b"", [], []
    skipping = False
    for line in head.split(b"\n"):
        if line.startswith(b" "):  # continuation of a multi-line header
            if not skipping:
                extra.append(line)
            continue
        key, _, value = line.partition(b" ")
        skipping = key in (b"gpgsig", b"gpgsig-sha256", b"mergetag", b"committer")
        if key == b"tree":
            tree = value.decode()
        elif key == b"parent":
            parents.append(value.decode())
        elif key == b"author":
            author = value
        elif not skipping:
            extra.append(line)
    kept = b"".join(line + b"\n" for line in extra)
    return CommitInfo(tree, parents, author, kept, message)
