"""What ``wtr check`` reports: waves, critical path and file ownership against the base tree."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner import git
from worktree_runner.doctor import startable
from worktree_runner.errors import BadInput, PlanInvalid, PlanProblem
from worktree_runner.plan import cochange, graph
from worktree_runner.plan.model import Plan
from worktree_runner.plan.overlaps import (
    PatternOverlap,
    StartConflict,
    pattern_overlaps,
    start_conflicts,
)
from worktree_runner.plan.patterns import PathIndex
from worktree_runner.plan.readiness import readiness_warnings


@dataclass(frozen=True)
class Refs:
    """Where a plan starts and lands, resolved in one repository."""

    base: str
    base_commit: str
    target: str


@dataclass(frozen=True)
class Overlap:
    path: str
    streams: tuple[str, str]


@dataclass
class Analysis:
    plan: Plan
    refs: Refs
    waves: list[list[str]]
    critical_path: list[str]
    owned: dict[str, list[str]]
    overlaps: list[Overlap] = field(default_factory=list)
    unowned: list[str] = field(default_factory=list)
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (where, pattern)
    tracked_count: int = 0
    readiness: list[str] = field(default_factory=list)  # see plan/readiness.py
    coupling: cochange.CouplingReport | None = None  # read from history by 'wtr check'
    pattern_overlaps: list[PatternOverlap] = field(default_factory=list)
    start_conflicts: list[StartConflict] = field(default_factory=list)
    layout: list[PlanProblem] = field(default_factory=list)
    agents: list[PlanProblem] = field(default_factory=list)  # presets that cannot start

    @property
    def valid(self) -> bool:
        return not self.overlaps and not self.layout and not self.agents

    @property
    def problems(self) -> list[PlanProblem]:
        return [*self.layout, *self.agents, *(
            PlanProblem(
                f"streams.{o.streams[1]}.files",
                f"'{o.path}' is owned by both '{o.streams[0]}' and '{o.streams[1]}', which may "
                "run at the same time; narrow the patterns, or order them with depends_on "
                "or conflicts_with",
                self.plan.line_of(f"streams.{o.streams[1]}.files"),
            )
            for o in self.overlaps
        )]

    @property
    def warnings(self) -> list[str]:
        matched_nothing = [
            f"{where}: pattern '{pattern}' matches no tracked file"
            for where, pattern in self.unmatched
        ]
        coupled = self.coupling.warnings() if self.coupling else []
        return [*self.plan.warnings, *matched_nothing, *self.readiness, *coupled,
                *(o.message() for o in self.pattern_overlaps),
                *(c.message() for c in self.start_conflicts)]

    def raise_if_invalid(self) -> None:
        if not self.valid:
            raise PlanInvalid(str(self.plan.path), self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": str(self.plan.path),
            "name": self.plan.name,
            "valid": self.valid,
            "base": self.refs.base,
            "base_commit": self.refs.base_commit,
            "target": self.refs.target,
            "max_parallel": self.plan.max_parallel,
            "errors": [p.to_json() for p in self.problems],
            "warnings": self.warnings,
            "waves": self.waves,
            "critical_path": self.critical_path,
            "streams": {
                s.name: {
                    "depends_on": list(s.depends_on),
                    "waits_for": list(s.waits_for),
                    "files": list(s.files),
                    "owned_files": self.owned[s.name],
                    **({"attempts": s.attempts, "choose": s.choose.kind,
                        "agents": s.candidate_names()} if s.attempts > 1 else {}),
                }
                for s in self.plan.streams
            },
            "overlaps": [{"path": o.path, "streams": list(o.streams)} for o in self.overlaps],
            "pattern_overlaps": [o.to_json() for o in self.pattern_overlaps],
            "start_conflicts": [c.to_json() for c in self.start_conflicts],
            "unowned_files": self.unowned,
            "tracked_files": self.tracked_count,
            "coupling": self.coupling.to_json() if self.coupling else {"enabled": False},
        }


def resolve_refs(plan: Plan, repo: git.Repository) -> Refs:
    """The plan's base (default: the checked-out branch), its commit, and its target branch."""
    base = plan.base or git.current_branch(repo)
    if base is None:
        raise BadInput(
            f"HEAD is detached in {repo.toplevel} and the plan names no base",
            hint="check out a branch or set 'base:' in the plan",
        )
    base_commit = git.resolve_commit(repo, base)
    target = plan.target or base
    if not git.branch_exists(repo, target):
        where = "target" if plan.target else "base (used as the target)"
        raise BadInput(
            f"the plan's {where} '{target}' is not a local branch",
            hint="set 'target:' to the branch the merge should land on",
        )
    return Refs(base=base, base_commit=base_commit, target=target)


def waves(plan: Plan) -> list[list[str]]:
    level = graph.levels(plan.ordering_graph())
    grouped: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for name in plan.names:
        grouped[level[name]].append(name)
    return grouped


def analyze(plan: Plan, repo: git.Repository, *, history: bool = False) -> Analysis:
    """The plan against the base tree; with ``history``, also the coupling its streams
    show in the base's history (unless the plan says ``coupling: off``)."""
    refs = resolve_refs(plan, repo)
    files = git.tracked_files(repo, refs.base_commit)
    index = PathIndex(files)
    owned = {s.name: index.matching(s.files) for s in plan.streams}
    owned_lists = {name: sorted(paths) for name, paths in owned.items()}
    covered = set().union(*owned.values(), index.matching(plan.shared))
    overlaps = _overlaps(plan, owned_lists)
    return _with_overlap_warnings(plan, overlaps, Analysis(
        plan=plan,
        refs=refs,
        waves=waves(plan),
        critical_path=graph.longest_chain(plan.dependency_graph(), plan.names),
        owned=owned_lists,
        overlaps=overlaps,
        unowned=[path for path in files if path not in covered],
        unmatched=list(_unmatched(plan, index)),
        tracked_count=len(files),
        readiness=readiness_warnings(plan),
        coupling=cochange.check_coupling(plan, repo, refs.base, refs.base_commit, index,
                                         owned_lists) if history else None,
        layout=worktrees_problems(plan, repo),
        agents=startable(plan),
    ))


def worktrees_problems(plan: Plan, repo: git.Repository) -> list[PlanProblem]:
    """Why the worktrees could not live where the plan puts them (checked, not created)."""
    root = plan.worktrees_root(repo.root)
    line = plan.line_of("worktrees_dir")
    reason = None
    if root == Path(root.anchor):
        reason = f"{root} is the filesystem root"
    elif root == repo.root or root.is_relative_to(repo.common_dir):
        reason = f"{root} is the repository itself or inside its git folder"
    elif root.exists() and not root.is_dir():
        reason = f"{root} exists and is not a folder"
    else:
        existing = next(p for p in (root, *root.parents) if p.exists())
        if os.statvfs(existing).f_flag & os.ST_RDONLY or not os.access(existing, os.W_OK):
            reason = f"{existing} cannot be written (read-only file system or no permission)"
    if reason is None:
        return []
    return [PlanProblem("worktrees_dir", f"{reason}; set 'worktrees_dir' to a writable folder "
                                         "of its own (by default the worktrees go beside the "
                                         "repository)", line)]


def _with_overlap_warnings(plan: Plan, overlaps: list[Overlap], analysis: Analysis) -> Analysis:
    """Add what may collide beyond tracked files: overlapping patterns of streams that may
    run together, and streams whose several starting points overlap."""
    ancestry = graph.Ancestry(plan.dependency_graph())
    tracked = {frozenset(o.streams) for o in overlaps}
    analysis.pattern_overlaps = pattern_overlaps(
        plan, lambda a, b: may_run_together(plan, ancestry, a, b), tracked)
    pairs = [(*o.streams, o.path) for o in overlaps]
    pairs += [(*o.streams, o.path) for o in analysis.pattern_overlaps]
    analysis.start_conflicts = start_conflicts(plan, pairs)
    return analysis


def _overlaps(plan: Plan, owned: dict[str, list[str]]) -> list[Overlap]:
    """Tracked files owned by two streams that may run at the same time; found through
    each file's owners, not by comparing every pair of streams."""
    ancestry = graph.Ancestry(plan.dependency_graph())
    names = plan.names
    position = {name: i for i, name in enumerate(names)}
    owners: dict[str, list[str]] = {}
    for name in names:
        for path in owned[name]:
            owners.setdefault(path, []).append(name)
    found: list[tuple[int, int, str]] = []
    for path, owning in owners.items():
        for i, first in enumerate(owning):
            for second in owning[i + 1:]:
                if may_run_together(plan, ancestry, first, second):
                    found.append((position[first], position[second], path))
    found.sort()
    return [Overlap(path, (names[a], names[b])) for a, b, path in found]


def may_run_together(plan: Plan, ancestry: graph.Ancestry, first: str, second: str) -> bool:
    """Neither depends on the other, directly or not, and no conflicts_with keeps them apart."""
    if ancestry.ordered(first, second):
        return False
    return (second not in plan.stream(first).conflicts_with
            and first not in plan.stream(second).conflicts_with)


def _unmatched(plan: Plan, index: PathIndex) -> Iterable[tuple[str, str]]:
    groups = [(f"streams.{s.name}.files", s.files) for s in plan.streams]
    groups.append(("shared", plan.shared))
    for where, patterns in groups:
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            if not index.matches_any(pattern):
                yield where, pattern
