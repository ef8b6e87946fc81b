"""Which streams a merge takes, and in what order (docs/commands.md, wtr merge)."""

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
    ancestry = graph.Ancestry(plan.dependency_graph())
    good = {Status.SUCCEEDED.value, Status.MERGED.value}
    not_good = ancestry.bits(name for name in plan.names if status[name] not in good)
    eligible = [
        name for name in plan.names
        if status[name] in good and not ancestry.mask[name] & not_good
    ]
    already = [n for n in eligible if status[n] == Status.MERGED.value]
    todo = [n for n in eligible if status[n] == Status.SUCCEEDED.value]
    chosen = set(eligible)
    left_out = [n for n in plan.names if n not in chosen]
    return MergeOrder(_topological(plan, todo), left_out, already)


def _topological(plan: Plan, names: list[str]) -> list[str]:
    """Dependencies (and earlier conflicting streams) first; otherwise plan order."""
    ordering = plan.ordering_graph()
    return graph.topological({n: ordering[n] for n in names})
