"""``wtr merge --check``: replay every stream's commits in memory and report conflicts.

git 2.39's ``merge-tree --write-tree`` has no ``--merge-base``, so a cherry-pick of
commit C (parent P) onto tip T is computed as the merge of C with a throwaway commit that
has T's tree and P as its parent: their merge base is then P, as in a real rebase. Only
objects are written; no worktree, index or ref changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worktree_runner import git
from worktree_runner.merge import rerere
from worktree_runner.merge.order import MergeOrder
from worktree_runner.run.state import RunRecord


@dataclass
class StreamPrediction:
    stream: str
    commits: int = 0
    conflict_commit: str | None = None
    conflicts: list[str] = field(default_factory=list)
    resolved_by_rerere: list[str] = field(default_factory=list)  # conflicts a recorded
    # resolution answers: the merge will resolve them without halting

    @property
    def clean(self) -> bool:
        return not self.conflicts


def predict(repo: git.Repository, record: RunRecord, order: MergeOrder) -> list[StreamPrediction]:
    """Conflicts each stream would meet when replayed onto the target, in merge order.

    A stream that would conflict is assumed left out when predicting the ones after it.
    """
    tip = git.resolve_commit(repo, f"refs/heads/{record.target}")
    predictions = []
    for name in order.streams:
        stream = record.streams[name]
        prediction, new_tip = _predict(repo, name, stream.base_commit or "",
                                       stream.head_commit or "", tip)
        if prediction.clean:
            tip = new_tip
        predictions.append(prediction)
    return predictions


def _predict(repo: git.Repository, name: str, base: str, head: str,
             tip: str) -> tuple[StreamPrediction, str]:
    """One stream replayed onto ``tip`` as the merge will: commit by commit, or as its net
    change when its history holds merge commits (a target merged in by a sync)."""
    prediction = StreamPrediction(name)
    commits = git.commits_between(repo, base, head)
    net = bool(base and head) and git.has_merge_commits(repo, base, head)
    prediction.commits = len(commits)
    for commit in [head] if net else commits:
        result = git.net_merge(repo, tip, base, head) if net else cherry_pick(repo, tip, commit)
        tree = result.tree
        if tree is None:
            resolution = rerere.resolve(repo, result)
            tree = resolution.tree
            prediction.resolved_by_rerere += resolution.resolved
        if tree is None:
            prediction.conflict_commit = commit
            prediction.conflicts = result.conflicts
            break
        tip = git.commit_tree(repo, tree, [tip], "wtr merge --check")
    return prediction, tip


def cherry_pick(repo: git.Repository, tip: str, commit: str) -> git.TreeMerge:
    parent = git.first_parent(repo, commit)
    stand_in = git.commit_tree(repo, git.tree_of(repo, tip), [parent], "wtr merge --check")
    return git.merge_trees(repo, stand_in, commit)
