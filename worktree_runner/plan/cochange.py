"""Coupling between streams, predicted from which files the base's history changed together.

For two paths (or two folders) the numbers are those of association rules:
``together`` is the number of commits that changed both (the support) and
``confidence`` is ``together`` over the commits that changed either. ``wtr check``
warns when streams that may run at the same time own a pair above both thresholds,
and when a hot file (changed by a large share of commits) belongs to, or is changed
with the files of, several such streams.
"""

from __future__ import annotations

import posixpath
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from worktree_runner import git
from worktree_runner.plan import graph
from worktree_runner.plan.history import History, read_history
from worktree_runner.plan.model import Coupling, Plan
from worktree_runner.plan.patterns import PathIndex

SHOWN_PAIRS = 10  # per pair of streams, in --json


@dataclass(frozen=True)
class CoupledPair:
    streams: tuple[str, str]
    paths: tuple[str, str]
    kind: str  # "file" or "folder"
    together: int
    either: int

    @property
    def confidence(self) -> float:
        return self.together / self.either

    def to_json(self) -> dict[str, Any]:
        return {"streams": list(self.streams), "kind": self.kind, "paths": list(self.paths),
                "together": self.together, "either": self.either,
                "confidence": round(self.confidence, 3)}


@dataclass(frozen=True)
class HotFile:
    path: str
    changes: int
    owners: tuple[str, ...]
    alongside: tuple[tuple[str, int], ...]  # (stream, commits changing it with that stream's files)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "changes": self.changes, "owners": list(self.owners),
                "alongside": dict(self.alongside)}


@dataclass(frozen=True)
class CouplingReport:
    settings: Coupling
    base: str
    commits: int
    skipped: int
    max_files: int
    pairs: tuple[CoupledPair, ...] = ()  # strongest first
    hot_files: tuple[HotFile, ...] = ()

    @property
    def summary(self) -> str:
        s = self.settings
        read = f"{self.commits} commits of {self.base}" + (f" since {s.since}" if s.since else "")
        skipped = f" ({self.skipped} changing over {self.max_files} files left out)" \
            if self.skipped else ""
        return (f"{read}{skipped}; thresholds min_support {s.min_support}, min_confidence "
                f"{s.min_confidence:g}, hot_share {s.hot_share:g}")

    @property
    def note(self) -> str | None:
        if self.commits == 0:
            return f"no history below {self.base} to learn from: coupling not checked"
        if self.commits < self.settings.min_support:
            return (f"only {commits_text(self.commits)} of history, fewer than min_support "
                    f"{self.settings.min_support}: no coupling can be found")
        return None

    def by_streams(self) -> dict[tuple[str, str], list[CoupledPair]]:
        """The coupled pairs of each pair of streams, strongest first."""
        found: dict[tuple[str, str], list[CoupledPair]] = defaultdict(list)
        for pair in self.pairs:
            found[pair.streams].append(pair)
        return dict(found)

    def warnings(self) -> list[str]:
        coupled = [self._pair_warning(pairs) for pairs in self.by_streams().values()]
        return coupled + [self._hot_warning(hot) for hot in self.hot_files]

    @staticmethod
    def describe(pair: CoupledPair) -> str:
        what = "folders " if pair.kind == "folder" else ""
        a, b = (f"{p}/" if pair.kind == "folder" else p for p in pair.paths)
        return (f"{pair.streams[0]} and {pair.streams[1]}: {what}{a} and {b} changed together "
                f"in {pair.together} of {pair.either} commits that touched either")

    def _pair_warning(self, pairs: list[CoupledPair]) -> str:
        top = pairs[0]
        extra = len(pairs) - 1
        more = f" (and {extra} more coupled pair{'s' if extra > 1 else ''})" if extra else ""
        return (f"{self.describe(top)} (confidence {top.confidence:.2f}; thresholds: "
                f"min_support {self.settings.min_support}, min_confidence "
                f"{self.settings.min_confidence:g}){more}; consider depends_on or conflicts_with")

    def _hot_warning(self, hot: HotFile) -> str:
        owned = f"owned by {', '.join(hot.owners)}" if hot.owners else "owned by no stream"
        alongside = ", ".join(f"{name} ({n})" for name, n in hot.alongside)
        changed = f"; changed in the same commits as files of {alongside}" if alongside else ""
        return (f"hot file {hot.path}: changed by {hot.changes} of {self.commits} commits "
                f"({hot.changes / self.commits:.0%}; threshold hot_share "
                f"{self.settings.hot_share:g}), {owned}{changed}; list it under 'shared' "
                "(and in the streams that need it) or serialise these streams with "
                "depends_on or conflicts_with")

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        shown: Counter[tuple[str, str]] = Counter()
        pairs = []
        for pair in self.pairs:
            shown[pair.streams] += 1
            if shown[pair.streams] <= SHOWN_PAIRS:
                pairs.append(pair.to_json())
        return {"enabled": True, "min_support": s.min_support,
                "min_confidence": s.min_confidence, "hot_share": s.hot_share,
                "since": s.since, "commits": self.commits, "skipped_commits": self.skipped,
                "max_commit_files": self.max_files, "note": self.note,
                "pairs": pairs, "hot_files": [h.to_json() for h in self.hot_files]}


def check_coupling(plan: Plan, repo: git.Repository, base: str, base_commit: str,
                   tree: PathIndex, owned: Mapping[str, Iterable[str]] | None = None,
                   ) -> CouplingReport | None:
    """The coupling of ``plan``'s streams in the base's history; None with ``coupling: off``.
    ``tree``: the base's tracked files; ``owned``: those of each stream, when already
    known. Only the history's paths are looked up in the tree: on a large repository a
    walk of the whole tree would cost more than the history does."""
    settings = plan.coupling
    if settings is None:
        return None
    history = read_history(repo, base_commit, settings.commits, settings.since)
    return couple(plan, history, base, tree, owned)


def couple(plan: Plan, history: History, base: str, tracked: PathIndex,
           owned: Mapping[str, Iterable[str]] | None = None) -> CouplingReport:
    settings = plan.coupling or Coupling()
    ordered = graph.Ancestry(plan.ordering_graph())
    units = _Units(plan, history, tracked, owned)
    hot = hot_paths(history, settings)
    counts, together = units.count(ordered)
    pairs = [
        CoupledPair(*units.in_plan_order(u, v), units.kind[u], both,
                    counts[u] + counts[v] - both)
        for (u, v), both in together.items()
        if both >= settings.min_support
        and both >= settings.min_confidence * (counts[u] + counts[v] - both)
        # a hot file changes with everything; it gets its own warning
        and not (units.kind[u] == "file" and (units.name[u] in hot or units.name[v] in hot))
    ]
    pairs.sort(key=lambda p: (-p.confidence, -p.together, p.kind != "file", p.streams, p.paths))
    hot_files = _hot_files(plan, history, units, hot, tracked, ordered)
    return CouplingReport(settings, base, len(history.commits), history.skipped,
                          history.max_files, tuple(pairs), tuple(hot_files))


def hot_paths(history: History, settings: Coupling) -> dict[str, int]:
    """Paths changed by at least ``hot_share`` of the commits (and ``min_support`` of them),
    with their number of commits, most changed first."""
    changes = Counter(pid for commit in history.commits for pid in commit)
    needed = max(settings.min_support, settings.hot_share * len(history.commits))
    return {history.paths[pid]: n for pid, n in changes.most_common() if n >= needed}


class _Units:
    """What a commit touches, per stream: the owned files and the owned parts of folders.

    A unit is (stream, kind, name); a path owned by two (ordered) streams is in both.
    Files gone from the base tree are left out; their folders still count.
    """

    def __init__(self, plan: Plan, history: History, tracked: PathIndex,
                 owned: Mapping[str, Iterable[str]] | None) -> None:
        known = set(history.paths)
        # Files of the base tree whose owners are known need no matching again.
        index = PathIndex(known if owned is None else (p for p in known if p not in tracked))
        shared = PathIndex(known).matching(plan.shared) if plan.shared else set()
        ids: dict[tuple[str, str, str], int] = {}
        self.of_path: dict[int, list[int]] = defaultdict(list)
        self.owners: dict[str, list[str]] = defaultdict(list)
        for stream in plan.streams:
            mine = index.matching(stream.files) if index.paths else set()
            if owned is not None:
                mine.update(path for path in owned[stream.name] if path in known)
            for path in sorted(mine - shared):
                self.owners[path].append(stream.name)
        path_id = {path: i for i, path in enumerate(history.paths)}
        for path, names in self.owners.items():
            folder = posixpath.dirname(path)
            for name in names:
                keys = [(name, "file", path)] if path in tracked else []
                if folder and tracked.has_folder(folder):
                    keys.append((name, "folder", folder))
                for key in keys:
                    self.of_path[path_id[path]].append(ids.setdefault(key, len(ids)))
        self.stream = [key[0] for key in ids]
        self.kind = [key[1] for key in ids]
        self.name = [key[2] for key in ids]
        self.history = history
        self.rank = {name: i for i, name in enumerate(plan.names)}

    def in_plan_order(self, u: int, v: int) -> tuple[tuple[str, str], tuple[str, str]]:
        """The streams of two units and the units' names, the earlier-declared stream first."""
        if self.rank[self.stream[u]] > self.rank[self.stream[v]]:
            u, v = v, u
        return (self.stream[u], self.stream[v]), (self.name[u], self.name[v])

    def touched(self, commit: Sequence[int]) -> dict[tuple[str, str], set[int]]:
        """The units a commit touches, by (stream, kind)."""
        found: dict[tuple[str, str], set[int]] = defaultdict(set)
        for pid in commit:
            for unit in self.of_path.get(pid, ()):
                found[self.stream[unit], self.kind[unit]].add(unit)
        return found

    def count(self, ordered: graph.Ancestry) -> tuple[Counter[int], Counter[tuple[int, int]]]:
        """Commits touching each unit, and commits touching each pair of units of one kind
        that belong to streams which may run at the same time."""
        counts: Counter[int] = Counter()
        together: Counter[tuple[int, int]] = Counter()
        for commit in self.history.commits:
            found = self.touched(commit)
            for units in found.values():
                counts.update(units)
            for (s, kind), (t, other_kind) in combinations(sorted(found), 2):
                if kind != other_kind or s == t or ordered.ordered(s, t):
                    continue
                together.update((min(u, v), max(u, v)) for u in found[s, kind]
                                for v in found[t, kind] if self.name[u] != self.name[v])
        return counts, together


def _hot_files(plan: Plan, history: History, units: _Units, hot: dict[str, int],
               tracked: PathIndex, ordered: graph.Ancestry) -> Iterable[HotFile]:
    """Hot files owned by, or changed with the files of, streams that may run together."""
    settings = plan.coupling or Coupling()
    shared = tracked.matching(plan.shared) if plan.shared else set()
    path_id = {path: i for i, path in enumerate(history.paths)}
    for path, n in hot.items():
        if path not in tracked or path in shared:
            continue
        pid = path_id[path]
        owners = tuple(units.owners.get(path, ()))
        alongside = Counter(
            name
            for commit in history.commits if pid in commit
            for name in {stream for stream, _ in units.touched([p for p in commit if p != pid])}
        )
        others = tuple((name, k) for name, k in sorted(alongside.items(), key=_most_first)
                       if k >= settings.min_support and name not in owners)
        involved = [*owners, *(name for name, _ in others)]
        if any(not ordered.ordered(a, b) for a, b in combinations(involved, 2)):
            yield HotFile(path, n, owners, others)


def _most_first(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def commits_text(n: int) -> str:
    return f"{n} commit" if n == 1 else f"{n} commits"
