"""``wtr init --suggest``: streams proposed from the co-change graph of the base's history.

1. Areas are folders kept whole: the top-level folders and files, except that a folder
   touched by more than half the commits (or any folder, while fewer areas than the
   streams asked for have changed) is split into its subfolders and its own files.
2. Hot files (changed by at least ``hot_share`` of the commits read, each time with
   other areas, at least two of them ``min_support`` times) are set aside: they become
   ``shared``, or they would tie every area to every other.
3. The areas changed in at least ``min_support`` commits are the nodes of a graph whose
   edges weigh the commits that changed both ends. Greedy modularity (networkx) groups
   them into communities: areas that change together end up together. With ``--streams
   N`` at most N (the most coupled communities, else the nearest by path, else the
   smallest are merged). Quieter areas join the community they changed with, or stay
   unowned (listed in a comment).
4. Each community is a stream. The draft is then checked as ``wtr check`` would: streams
   still coupled get ``conflicts_with``, flagged hot files become ``shared``, until the
   check has nothing left to say.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

from worktree_runner import git
from worktree_runner.plan.cochange import CouplingReport, commits_text, couple, hot_paths
from worktree_runner.plan.history import History, read_history
from worktree_runner.plan.load import parse_plan
from worktree_runner.plan.model import Coupling
from worktree_runner.plan.starter import (
    checked_out,
    literal_pattern,
    plan_header,
    starter_plan,
    stream_name,
    yaml_scalar,
)

if TYPE_CHECKING:
    import networkx as nx

MAX_STREAMS = 8  # without --streams
SPLIT_SHARE = 0.5
_MAX_SPLITS = 64


@dataclass(frozen=True, order=True)
class Area:
    """A folder with everything under it (``tree``), a folder's own files (``files``), or
    a top-level file (``file``)."""

    name: str
    kind: str

    @property
    def label(self) -> str:
        return {"file": self.name, "files": f"{self.name}/*"}.get(self.kind, f"{self.name}/")

    def patterns(self, tracked: Sequence[str]) -> list[str]:
        literal = literal_pattern(self.name)
        if self.kind == "tree":
            return [f"{literal}/**"]
        if self.kind == "files":
            return [f"{literal}/*", f"!{literal}/*/"]
        # No leading '/' in a plan: exclude files of the same name below the root instead.
        deeper = any(path.endswith(f"/{self.name}") for path in tracked)
        return [literal, f"!*/**/{literal}"] if deeper else [literal]


@dataclass
class StreamDraft:
    name: str
    areas: list[Area]
    commits: int
    conflicts_with: dict[str, str] = field(default_factory=dict)  # other -> why
    shared: list[str] = field(default_factory=list)


@dataclass
class Suggestion:
    text: str
    streams: list[StreamDraft]
    commits: int
    note: str | None = None


def suggest_plan(repo: git.Repository, plan_path: Path, streams: int | None = None,
                 commits: int = 1000, since: str | None = None) -> Suggestion:
    """A commented plan whose streams follow the co-change history of the checked-out
    branch; with no history to learn from, the starter plan (one stream per folder)."""
    branch, head = checked_out(repo)
    history = read_history(repo, head, commits, since)
    settings = Coupling(commits=commits, since=since)
    if len(history.commits) < settings.min_support:
        note = (f"only {commits_text(len(history.commits))} usable in the history of {branch} "
                f"(fewer than {settings.min_support}): nothing to learn from, so one stream "
                "per top-level folder")
        return Suggestion(starter_plan(repo, plan_path), [], len(history.commits), note)
    tracked = git.tracked_files(repo, head)
    return _Suggester(history, tracked, settings, streams).plan(repo, plan_path, branch)


class _Suggester:
    def __init__(self, history: History, tracked: list[str], settings: Coupling,
                 wanted: int | None) -> None:
        self.history = history
        self.tracked = tracked
        self.tracked_set = set(tracked)
        self.settings = settings
        self.wanted = wanted
        self.areas = _Areas(tracked)
        self.hot: dict[str, int] = {}
        self._split_areas()

    # -- what history says --------------------------------------------------------------

    def _hot_files(self) -> dict[str, int]:
        """Hot paths changed, each in at least min_support commits, with two other areas."""
        candidates = {p: n for p, n in hot_paths(self.history, self.settings).items()
                      if p in self.tracked_set}
        found: dict[str, int] = {}
        for path, n in candidates.items():
            own = self.areas.of(path)
            alongside: Counter[Area] = Counter()
            for commit in self.history.commits:
                paths = [self.history.paths[i] for i in commit]
                if path in paths:
                    alongside.update({a for p in paths if (a := self.areas.of(p))} - {own})
            if sum(k >= self.settings.min_support for k in alongside.values()) >= 2:
                found[path] = n
        return found

    def touched(self) -> list[set[Area]]:
        """The areas each commit touched, hot files aside."""
        result = []
        for commit in self.history.commits:
            paths = (self.history.paths[i] for i in commit)
            result.append({a for p in paths if p not in self.hot
                           if (a := self.areas.of(p)) is not None})
        return result

    def _split_areas(self) -> list[set[Area]]:
        """Split big folders (see the module's doc) and return what each commit touched."""
        for _ in range(_MAX_SPLITS):
            self.hot = self._hot_files()
            touched = self.touched()
            counts = Counter(a for areas in touched for a in areas)
            splittable = [a for a in counts if self.areas.splittable(a)]
            big = [a for a in splittable if counts[a] > SPLIT_SHARE * len(touched)]
            active = sum(n >= self.settings.min_support for n in counts.values())
            if not big and self.wanted and active < self.wanted:
                big = splittable
            if not big:
                return touched
            self.areas.split(max(big, key=lambda a: (counts[a], a)))
        self.hot = self._hot_files()
        return self.touched()

    # -- grouping ------------------------------------------------------------------------

    def groups(self) -> tuple[list[set[Area]], list[Area], list[set[Area]]]:
        touched = self.touched()
        counts = Counter(a for areas in touched for a in areas)
        weights = Counter(pair for areas in touched for pair in combinations(sorted(areas), 2))
        active = {a for a, n in counts.items() if n >= self.settings.min_support}
        graph = _graph(active, {p: w for p, w in weights.items() if set(p) <= active})
        limit = self.wanted or MAX_STREAMS
        found = _merge_down(_communities(graph, self.wanted), limit, weights)
        quiet = self._attach_quiet(found, set(counts) - active, weights)
        return found, quiet, touched

    def _attach_quiet(self, groups: list[set[Area]], quiet: set[Area],
                      weights: Counter[tuple[Area, Area]]) -> list[Area]:
        """Put each quiet area in the group it changed with most; return the rest."""
        left = []
        for area in sorted(quiet):
            best = max(groups, key=lambda g: _weight({area}, g, weights), default=None)
            if best is not None and _weight({area}, best, weights) > 0:
                best.add(area)
            else:
                left.append(area)
        unchanged = {self.areas.of(p) for p in self.tracked if p not in self.hot}
        unchanged -= set().union(*groups, quiet)
        return sorted([*left, *(a for a in unchanged if a is not None)])

    # -- the plan ------------------------------------------------------------------------

    def plan(self, repo: git.Repository, plan_path: Path, branch: str) -> Suggestion:
        groups, unowned, touched = self.groups()
        drafts = _name_streams(groups, Counter(a for areas in touched for a in areas), touched)
        shared = sorted(self.hot)
        for _ in range(len(drafts) ** 2 + len(self.tracked_set) + 1):
            text = self.render(repo, plan_path, branch, drafts, shared, unowned)
            report = couple(parse_plan(text, plan_path), self.history, branch, self.tracked_set)
            if not _settle(report, drafts, shared):
                break
        return Suggestion(text, drafts, len(self.history.commits))

    def render(self, repo: git.Repository, plan_path: Path, branch: str,
               drafts: list[StreamDraft], shared: list[str], unowned: list[Area]) -> str:
        header = plan_header(repo, plan_path, branch)
        head, streams_line = header.rstrip("\n").rsplit("\n", 1)
        parts = [self._intro(branch, len(drafts)), head, "\n"]
        if shared:
            parts.append(self._shared_text(shared))
        parts.append(streams_line + "\n")
        parts += [self._stream_text(d, shared) for d in drafts]
        if unowned:
            parts.append(_unowned_text(unowned, self.settings.min_support))
        return "".join(parts)

    def _intro(self, branch: str, streams: int) -> str:
        h = self.history
        since = f" since {self.settings.since}" if self.settings.since else ""
        skipped = (f" ({h.skipped} more left out: each changed over {h.max_files} files)"
                   if h.skipped else "")
        return (
            f"# Suggested by 'wtr init --suggest' from the last {len(h.commits)} commits of "
            f"{branch}{since}{skipped}:\n"
            f"# {streams} streams, each a group of folders that changed together "
            "(community detection on\n# the co-change graph). Check the grouping, write the "
            "prompts, then run 'wtr check'.\n"
        )

    def _shared_text(self, shared: list[str]) -> str:
        total = len(self.history.commits)
        lines = ["# Hot files: changed by many commits, together with the files of several "
                 "streams. A stream\n# may change a shared file only if it lists it, and "
                 "streams listing the same one never\n# run at the same time.\n",
                 "shared:\n"]
        for path in shared:
            n = self._changes(path)
            lines.append(f"  - {_quoted(path)}    # changed by {n} of {total} commits\n")
        return "".join(lines)

    def _changes(self, path: str) -> int:
        ids = {p: i for i, p in enumerate(self.history.paths)}
        pid = ids.get(path)
        return sum(pid in c for c in self.history.commits) if pid is not None else 0

    def _stream_text(self, draft: StreamDraft, shared: list[str]) -> str:
        patterns = [p for a in draft.areas for p in a.patterns(self.tracked)]
        inside = [f"!{literal_pattern(path)}" for path in shared
                  if any(self.areas.of(path) == a for a in draft.areas)]
        listing = ", ".join(a.label for a in draft.areas)
        lines = [
            f"  {yaml_scalar(draft.name)}:\n",
            f"    description: {yaml_scalar(listing)}   # {draft.commits} commits changed these\n",
            f"    files: [{', '.join(_quoted(p) for p in [*patterns, *inside])}]\n",
            "    prompt: |\n",
            f"      Describe what the agent should do in {listing}.\n",
        ]
        if draft.conflicts_with:
            lines += [f"    # {why}\n" for why in draft.conflicts_with.values()]
            others = ", ".join(draft.conflicts_with)
            lines.append(f"    conflicts_with: [{others}]   # or depends_on: [{others}] if "
                         "this stream builds on their work\n")
        if draft.shared:
            lines.append(f"    shared: [{', '.join(_quoted(p) for p in draft.shared)}]\n")
        touched = self._shared_touched(draft, shared)
        if touched:
            lines.append(f"    # shared: [{', '.join(_quoted(p) for p in touched)}]   # changed "
                         "with these files: list what this stream will change\n")
        return "".join(lines)

    def _shared_touched(self, draft: StreamDraft, shared: list[str]) -> list[str]:
        mine = set(draft.areas)
        found = []
        for path in shared:
            if path in draft.shared:
                continue
            with_mine = sum(
                1 for commit in self.history.commits
                if path in (paths := {self.history.paths[i] for i in commit})
                and any(self.areas.of(p) in mine for p in paths if p != path)
            )
            if with_mine >= self.settings.min_support:
                found.append(path)
        return found


class _Areas:
    """Which area a path belongs to, as folders get split."""

    def __init__(self, tracked: Iterable[str]) -> None:
        self.folders: set[str] = set()
        self.with_files = {posixpath.dirname(path) for path in tracked}
        for path in tracked:
            folder = posixpath.dirname(path)
            while folder and folder not in self.folders:
                self.folders.add(folder)
                folder = posixpath.dirname(folder)
        self.subfolders = Counter(posixpath.dirname(f) for f in self.folders)
        self.trees = {f for f in self.folders if "/" not in f}
        self.own_files: set[str] = set()  # folders split, whose own files form an area

    def of(self, path: str) -> Area | None:
        folder = posixpath.dirname(path)
        if not folder:
            return Area(path, "file")
        if folder in self.own_files:
            return Area(folder, "files")
        while folder:
            if folder in self.trees:
                return Area(folder, "tree")
            folder = posixpath.dirname(folder)
        return None

    def splittable(self, area: Area) -> bool:
        """A folder with at least two parts: subfolders, or a subfolder and its own files."""
        if area.kind != "tree":
            return False
        return self.subfolders[area.name] + (area.name in self.with_files) >= 2

    def split(self, area: Area) -> None:
        self.trees.discard(area.name)
        self.trees.update(f for f in self.folders if posixpath.dirname(f) == area.name)
        self.own_files.add(area.name)


def _graph(nodes: Iterable[Area], weights: dict[tuple[Area, Area], int]) -> nx.Graph[Area]:
    import networkx as nx  # only here: it takes half a second to import

    graph: nx.Graph[Area] = nx.Graph()
    graph.add_nodes_from(sorted(nodes))
    graph.add_weighted_edges_from((a, b, w) for (a, b), w in sorted(weights.items()))
    return graph


def _communities(graph: nx.Graph[Area], wanted: int | None) -> list[set[Area]]:
    from networkx.algorithms.community import greedy_modularity_communities

    nodes = sorted(graph.nodes)
    if not nodes:
        return []
    if graph.number_of_edges() == 0 or (wanted and wanted >= len(nodes)):
        return [{a} for a in nodes]
    # cutoff: stop merging at the number wanted; _merge_down goes below it by our rules.
    found = greedy_modularity_communities(graph, weight="weight", cutoff=wanted or 1)
    return sorted((set(c) for c in found), key=min)


def _weight(a: set[Area], b: set[Area], weights: Counter[tuple[Area, Area]]) -> int:
    return sum(weights[min(x, y), max(x, y)] for x in a for y in b)


def _merge_down(groups: list[set[Area]], limit: int,
                weights: Counter[tuple[Area, Area]]) -> list[set[Area]]:
    """Merge groups until at most ``limit`` remain: the most coupled first, then those
    nearest by path, then the smallest."""
    groups = [set(g) for g in groups]
    while len(groups) > limit:
        i, j = max(combinations(range(len(groups)), 2), key=lambda ij: (
            _weight(groups[ij[0]], groups[ij[1]], weights),
            _common_depth(groups[ij[0]], groups[ij[1]]),
            -len(groups[ij[0]]) - len(groups[ij[1]]),
        ))
        groups[i] |= groups.pop(j)
    return groups


def _common_depth(a: set[Area], b: set[Area]) -> int:
    prefix = posixpath.commonpath([x.name for x in (*a, *b)])
    return len(prefix.split("/")) if prefix else 0


def _name_streams(groups: list[set[Area]], counts: Counter[Area],
                  touched: list[set[Area]]) -> list[StreamDraft]:
    drafts = []
    taken: set[str] = set()
    for group in sorted(groups, key=min):
        areas = sorted(group)
        main = max(areas, key=lambda a: (counts[a], [-ord(c) for c in a.name]))
        name = stream_name(posixpath.basename(main.name))
        if name in taken:
            name = stream_name(main.name.replace("/", "-"))
        base, n = name, 2
        while name in taken:
            name, n = f"{base[:60]}-{n}", n + 1
        taken.add(name)
        drafts.append(StreamDraft(name, areas, sum(not group.isdisjoint(t) for t in touched)))
    return drafts


def _settle(report: CouplingReport, drafts: list[StreamDraft], shared: list[str]) -> bool:
    """Order the streams the check still finds coupled, share the hot files it flags;
    False when there was nothing left to do."""
    order = {d.name: i for i, d in enumerate(drafts)}
    changed = False
    for (a, b), pairs in report.by_streams().items():
        first, later = sorted((a, b), key=order.__getitem__)
        draft = drafts[order[later]]
        if first not in draft.conflicts_with:
            draft.conflicts_with[first] = report.describe(pairs[0])
            changed = True
    for hot in report.hot_files:
        if hot.path not in shared:
            shared.append(hot.path)
            changed = True
    return changed


def _unowned_text(areas: list[Area], min_support: int) -> str:
    listing = ", ".join(a.label for a in areas)
    return (f"# Changed in fewer than {min_support} of the commits read (or with nothing "
            f"else), so owned by no stream:\n#   {listing}\n# Add them to a stream's files "
            "if work there is planned.\n")


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)

