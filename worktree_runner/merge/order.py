"""Which streams a merge takes, and in what order (docs/commands.md, wtr merge)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from worktree_runner.plan import graph
from worktree_runner.plan.model import Plan
from worktree_runner.run.state import RunRecord, Status


@dataclass(frozen=True)
class MergeOrder:
    streams: list[str]     # to merge, dependencies first, plan order between independent ones
    left_out: list[str]    # not ready (yet): see reasons
    already: list[str]     # landed by an earlier landing of this run
    reasons: dict[str, str] = field(default_factory=dict)  # left-out stream -> why


def merge_order(plan: Plan, record: RunRecord, skip: Mapping[str, str] | None = None,
                only: Collection[str] | None = None) -> MergeOrder:
    """Succeeded streams whose predecessors have all landed or land with them.

    While the run goes on, the others wait for a later landing; ``skip`` names streams
    kept out on purpose, with the reason (they broke verify, they would conflict), and
    with them their dependents. With ``only`` (the streams a caller checked before
    landing), one that succeeded since counts as not finished: it was not looked at."""
    skip = skip or {}
    status = {name: s.status if only is None or name in only or s.status != Status.SUCCEEDED
              else Status.RUNNING.value for name, s in record.streams.items()}
    depends = plan.dependency_graph()
    reasons: dict[str, str] = {}
    ready: list[str] = []
    for name in graph.topological(depends):  # a stream after what it depends on
        reason = skip.get(name) or _own_reason(status[name])
        blocker = next((d for d in depends[name] if d in reasons), None)
        if blocker and reason != Status.FAILED.value:
            reason = f"waits for {blocker}"
        if reason is not None:
            reasons[name] = reason
        elif status[name] == Status.SUCCEEDED.value:
            ready.append(name)
    already = [n for n in plan.names if status[n] == Status.MERGED.value]
    left_out = [n for n in plan.names if n in reasons]
    chosen = set(ready)
    return MergeOrder(_topological(plan, [n for n in plan.names if n in chosen]), left_out,
                      already, reasons)


def _own_reason(status: str) -> str | None:
    if status in (Status.SUCCEEDED.value, Status.MERGED.value):
        return None
    if status in (Status.PENDING.value, Status.RUNNING.value):
        return "not finished"
    return status


def _topological(plan: Plan, names: list[str]) -> list[str]:
    """Dependencies (and earlier conflicting streams) first; otherwise plan order."""
    ordering = plan.ordering_graph()
    return graph.topological({n: ordering[n] for n in names})
