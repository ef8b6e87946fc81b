"""Which streams a merge takes, and in what order (SPEC "Merge")."""

from __future__ import annotations

from dataclasses import dataclass

from worktree_runner.plan import graph
from worktree_runner.plan.model import Plan
from worktree_runner.run.state import RunRecord, Status


@dataclass(frozen=True)
class MergeOrder:
    streams: list[str]     # to merge, dependencies first, plan order between independent ones
    left_out: list[str]    # did not succeed, or depend on one that did not
    already: list[str]     # merged by an earlier merge of this run


def merge_order(plan: Plan, record: RunRecord) -> MergeOrder:
    status = {name: s.status for name, s in record.streams.items()}
    above = graph.ancestors(plan.dependency_graph())
    good = {Status.SUCCEEDED.value, Status.MERGED.value}
    eligible = [
        name for name in plan.names
        if status[name] in good and all(status[d] in good for d in above[name])
    ]
    already = [n for n in eligible if status[n] == Status.MERGED.value]
    todo = [n for n in eligible if status[n] == Status.SUCCEEDED.value]
    left_out = [n for n in plan.names if n not in eligible]
    return MergeOrder(_topological(plan, todo), left_out, already)


def _topological(plan: Plan, names: list[str]) -> list[str]:
    """Dependencies (and earlier conflicting streams) first; otherwise plan order."""
    chosen = set(names)
    waits = {n: [w for w in plan.ordering_graph()[n] if w in chosen] for n in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        nxt = next(n for n in names if n not in ordered and all(w in ordered for w in waits[n]))
        ordered.append(nxt)
    return ordered
