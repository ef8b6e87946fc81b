"""``wtr init --suggest``: streams proposed, file by file, from the base's co-change history.

1. Units. Every file tracked at the base is a unit, except that a test file and the
   module it is named after (``tests/test_core.py`` and ``src/pkg/core.py``,
   ``core_test.go``, ``core.test.ts``) form one unit: a module moves with its tests.
   Paths the history names but the base no longer holds are left out. The project's own
   machinery at the top level (CI folders and dotfiles, tool configs, dependency pins,
   packaging: ``PROJECT_FILES``) is one unit, kept a group of its own: such work (a CI
   bump, a pin update) mostly touches nothing else, and with code it ties everything.
2. Hot files. Changelogs, lockfiles, news-fragment folders, ``__init__``-style registries
   and any file changed by at least ``hot_share`` of the commits are candidates. One that
   history shows changing with the files of two streams or more (each at least
   ``min_support`` times) becomes ``shared``, with the reason in a comment (a top-level
   changelog or lockfile as its kind, ``CHANGES.*``, ``*.lock``); any other is owned like
   a unit.
3. Groups. The history is read as changes: the commits of the branch's first-parent
   line, a merged branch counting as one (the size of work a stream takes on; single
   commits would split what one piece of work touches). The units changed are the nodes
   of a graph whose edges weigh the changes that touched both ends (a change of n units
   adds 1/(n-1) to each pair, so a sweep does not weigh more than a focused change).
   Louvain community detection (networkx, fixed seed; each unit also tied to its folder,
   so files history says little about lean to their neighbours) groups them. Groups most
   changes touch together are merged until ``CONFINED`` of the changes read (recent ones
   weighing more; the project unit set aside) stay inside one group; a group then becomes
   a stream when at least ``min_support`` changes touched it alone: as many streams as
   the history supports (with ``--streams N``, at most N). Every other group joins the
   stream it changed with most. Files no change touched join the stream owning most of
   their folder, else the root's stream (the one owning most top-level files), which
   starts with ``*``: it owns what no other stream does, files and folders created later
   at the top level included.
4. Patterns. A folder whose files all belong to one stream is one ``folder/**`` pattern;
   otherwise the stream holding most of it takes the folder (so files created there later
   are owned too) and the others list their files, excluded from it with ``!path``.
5. Names come from what a stream holds: the folder most of its files are in, else its
   most changed module (``tooling`` when that is the project unit). The draft is then
   checked as ``wtr check`` would: streams still coupled get ``conflicts_with``, flagged
   hot files become ``shared``, until the check has nothing left to say.

``gather_evidence`` returns steps 1-3 (units, hot files, groups) for other planners.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worktree_runner import git
from worktree_runner.plan.cochange import CouplingReport, couple, hot_paths
from worktree_runner.plan.history import History, read_history
from worktree_runner.plan.load import parse_plan
from worktree_runner.plan.model import Coupling
from worktree_runner.plan.patterns import PathIndex, compile_patterns
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

MAX_STREAMS = 16  # without --streams: more would be hard to review
# Share of the changes read (recent ones weigh more) that must touch one stream alone.
# These three were chosen on real histories, on windows before the one docs/plan.md reports
# (0.875 when the history was read commit by commit; changes span more files).
CONFINED = 0.8
HALF_LIFE = 250  # changes: a change this much older weighs half as much
# A unit's link to its folder, as a share of a unit's mean co-change weight.
FOLDER_WEIGHT = 0.5
_FOLDER = "\0"  # folder nodes in the co-change graph
PROJECT_STREAM = "tooling"  # the name of the stream holding the project unit
# The project's machinery, at the top level: dotfiles and dot-folders (.github/, .gitignore,
# .pre-commit-config.yaml), CI, tool configs, dependency pins and packaging.
PROJECT_FILES = re.compile(
    r"(?:\.[^/]+|ci|requirements|noxfile\.py|tox\.ini|setup\.cfg|setup\.py|pyproject\.toml"
    r"|Makefile|MANIFEST\.in|requirements[^/]*\.(?:txt|in)|(?:azure-pipelines|appveyor"
    r"|codecov)\.ya?ml|Jenkinsfile|renovate\.json|(?:mypy|pytest)\.ini|ruff\.toml"
    r"|package\.json|tsconfig\.json|Cargo\.toml|go\.mod|Dockerfile)(?:/.*)?")
SEED = 7  # Louvain is randomised; a fixed seed makes the suggestion repeatable
_RESOLUTIONS = (1.0, 1.5, 2.0, 3.0, 5.0, 8.0)  # tried in turn when more streams are asked

_CHANGELOG = re.compile(r"(changes|changelog|history|news|release[-_]?notes|whatsnew)"
                        r"(\.[a-z]+)?$", re.IGNORECASE)
_LOCKFILES = frozenset({
    "poetry.lock", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml",
    "Cargo.lock", "uv.lock", "Pipfile.lock", "go.sum", "composer.lock", "Gemfile.lock",
    "bun.lockb", "pdm.lock", "flake.lock",
})
_FRAGMENT_FOLDERS = frozenset({"news", "newsfragments", "changelog.d", "changes", ".changeset",
                               "changelog", "unreleased"})
_REGISTRIES = frozenset({"__init__.py", "index.ts", "index.js", "mod.rs"})
Weights = dict[tuple[str, str], float]
_TEST_NAME = re.compile(r"^(?:test_(?P<a>.+)|(?P<b>.+?)_test|(?P<c>.+?)\.(?:test|spec))"
                        r"\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class HotPath:
    """A path (a file, or a news-fragment folder as ``folder/**``) many changes touch."""

    pattern: str
    kind: str  # changelog | lockfile | news fragments | registry | hot
    changes: int

    def reason(self, total: int, streams: int, unit: str = "changes") -> str:
        return (f"{self.kind}: changed by {self.changes} of {total} {unit}, with the files "
                f"of {streams} streams")


@dataclass
class Group:
    """Units that change together; a stream once named."""

    units: list[str]  # unit keys (a module's path)
    alone: int = 0  # changes that touched this group and nothing else (hot files aside)
    touched: int = 0  # changes that touched it


@dataclass(frozen=True)
class Evidence:
    """What the history of the base says about how to split it."""

    tracked: tuple[str, ...]
    history: History
    units: dict[str, tuple[str, ...]]  # unit key -> its files (a module with its tests)
    hot: dict[str, HotPath]  # candidate hot paths by pattern
    groups: list[Group]  # groups of unit keys, the most changed first
    coupling: Coupling
    project: str | None = None  # the key of the project unit (PROJECT_FILES), if any

    def unit_of(self) -> dict[str, str]:
        return {path: key for key, paths in self.units.items() for path in paths}

    def to_json(self) -> dict[str, Any]:
        """For a planner: the modules with their tests, the hot candidates and the groups."""
        return {
            "commits": len(self.history.commits), "files": len(self.tracked),
            "modules_with_tests": {key: list(paths[1:]) for key, paths in self.units.items()
                                   if len(paths) > 1 and key != self.project},
            "project_files": list(self.units[self.project]) if self.project else [],
            "hot": [{"path": h.pattern, "kind": h.kind, "changes": h.changes}
                    for h in self.hot.values()],
            "groups": [{"units": g.units, "touched": g.touched, "alone": g.alone}
                       for g in self.groups],
        }


@dataclass
class StreamDraft:
    name: str
    files: list[str]  # the tracked files it owns
    commits: int
    alone: int
    modules: list[str]  # its most changed units, for the description
    patterns: list[str] = field(default_factory=list)
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
    history = read_history(repo, head, commits, since, first_parent=True)
    settings = Coupling(commits=commits, since=since)
    if len(history.commits) < settings.min_support:
        note = (f"only {changes_text(len(history.commits))} usable in the history of {branch} "
                f"(fewer than {settings.min_support}): nothing to learn from, so one stream "
                "per top-level folder")
        return Suggestion(starter_plan(repo, plan_path), [], len(history.commits), note)
    evidence = evidence_from(history, git.tracked_files(repo, head), settings, streams)
    if not evidence.groups:
        note = (f"the {changes_text(len(history.commits))} read in the history of {branch} "
                "changed only hot files (changelogs, lockfiles, news) or files gone since: "
                "nothing to group, so one stream per top-level folder")
        return Suggestion(starter_plan(repo, plan_path), [], len(history.commits), note)
    # Grouped by changes (a merged branch as one), checked as 'wtr check' will: by commits.
    commit_history = read_history(repo, head, commits, since)
    return _Drafter(evidence).plan(repo, plan_path, branch, commit_history)


def gather_evidence(repo: git.Repository, commit: str, commits: int = 1000,
                    since: str | None = None, streams: int | None = None) -> Evidence:
    """Units, hot paths and co-change groups of ``commit``'s history (see the module doc)."""
    settings = Coupling(commits=commits, since=since)
    history = read_history(repo, commit, commits, since, first_parent=True)
    return evidence_from(history, git.tracked_files(repo, commit), settings, streams)


def evidence_from(history: History, tracked: Sequence[str], settings: Coupling,
                  wanted: int | None = None) -> Evidence:
    units, project = with_project_unit(modules_with_tests(tracked))
    hot = hot_candidates(history, tracked, settings)
    evidence = Evidence(tuple(tracked), history, units, hot, [], settings, project)
    evidence.groups.extend(_group(evidence, wanted))
    return evidence


# -- units ---------------------------------------------------------------------------------


def modules_with_tests(tracked: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each tracked file as a unit, a test file joined to the module it is named after
    (when exactly one module has that name; else the nearest by path)."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    tests: dict[str, str] = {}
    for path in tracked:
        name = posixpath.basename(path)
        found = _TEST_NAME.match(name)
        if found:
            tests[path] = next(g for g in found.groups() if g) + posixpath.splitext(name)[1]
        else:
            by_stem[name].append(path)
    units: dict[str, list[str]] = {path: [path] for paths in by_stem.values() for path in paths}
    for test, module_name in sorted(tests.items()):
        modules = by_stem.get(module_name, [])
        if modules:
            units[_nearest(test, modules)].append(test)
        else:
            units[test] = [test]
    return {key: tuple(paths) for key, paths in units.items()}


def with_project_unit(units: dict[str, tuple[str, ...]]
                      ) -> tuple[dict[str, tuple[str, ...]], str | None]:
    """The units with the project's machinery (``PROJECT_FILES``; not a changelog or a
    lockfile) joined into one, keyed by its first path; and that key (None without one)."""
    joined = sorted(key for key in units
                    if PROJECT_FILES.fullmatch(key) and _hot_kind(key) is None)
    if not joined:
        return units, None
    key = joined[0]
    merged = {k: v for k, v in units.items() if k not in joined}
    merged[key] = tuple(path for k in joined for path in units[k])
    return merged, key


def _nearest(path: str, candidates: list[str]) -> str:
    def shared_depth(other: str) -> int:
        common = posixpath.commonpath([path, other])
        return len(common.split("/")) if common else 0
    return max(sorted(candidates), key=lambda c: (shared_depth(c), -len(c)))


# -- hot paths -----------------------------------------------------------------------------


def hot_candidates(history: History, tracked: Sequence[str],
                   settings: Coupling) -> dict[str, HotPath]:
    """Changelogs, lockfiles, news-fragment folders, registries and history's hot files,
    among the paths of the base, each with the commits that changed it."""
    tracked_set = set(tracked)
    changes = Counter(history.paths[pid] for commit in history.commits for pid in commit)
    found: dict[str, HotPath] = {}
    for path in tracked:
        kind = _hot_kind(path)
        if kind == "news fragments":
            folder = posixpath.dirname(path)
            pattern = f"{literal_pattern(folder)}/**"
            if pattern not in found:
                n = sum(any(history.paths[p].startswith(folder + "/") for p in commit)
                        for commit in history.commits)
                found[pattern] = HotPath(pattern, kind, n)
        elif kind and changes[path]:
            found[path] = HotPath(path, kind, changes[path])
    for path, n in hot_paths(history, settings).items():
        if path in tracked_set and path not in found and not _in_folder_pattern(path, found):
            found[path] = HotPath(path, "hot", n)
    return found


def _hot_kind(path: str) -> str | None:
    name = posixpath.basename(path)
    folder = posixpath.basename(posixpath.dirname(path))
    if folder.lower() in _FRAGMENT_FOLDERS and path.count("/") <= 2:
        return "news fragments"
    if name in _LOCKFILES:
        return "lockfile"
    if name in _REGISTRIES:
        return "registry"
    if _CHANGELOG.fullmatch(name):
        return "changelog"
    return None


def _in_folder_pattern(path: str, found: dict[str, HotPath]) -> bool:
    return any(p.endswith("/**") and path.startswith(p[:-2]) for p in found)


def hot_match(pattern: str, path: str) -> bool:
    return path.startswith(pattern[:-2]) if pattern.endswith("/**") else path == pattern


# -- groups --------------------------------------------------------------------------------


def _group(evidence: Evidence, wanted: int | None) -> list[Group]:
    """Co-change groups of the units (hot candidates aside), the most changed first."""
    unit_of = evidence.unit_of()
    # A file that is hot only by its count stays in the graph: it may well be one
    # stream's busiest file. Changelogs, lockfiles and the like would tie everything.
    hot = [pattern for pattern, h in evidence.hot.items() if h.kind != "hot"]
    touched: list[set[str]] = []
    recency: list[float] = []
    for age, commit in enumerate(evidence.history.commits):
        paths = (evidence.history.paths[i] for i in commit)
        units = {unit_of[p] for p in paths if p in unit_of
                 and not any(hot_match(h, p) for h in hot)}
        if units:
            touched.append(units)
            recency.append(0.5 ** (age / HALF_LIFE))
    weights = _co_change(touched, recency)
    nodes = sorted({u for units in touched for u in units})
    limit = min(wanted or MAX_STREAMS, max(1, len(nodes)))
    graph = _graph(nodes, weights)
    _add_folders(graph, nodes, FOLDER_WEIGHT * sum(recency) / max(1, len(nodes)))
    project = evidence.project if evidence.project in nodes else None
    # The project unit is a group of its own (taken out of its community), and the code
    # groups are merged by the code part of each change: work that also touches CI or a
    # config does not tie them together through it.
    communities = [{u for u in c if not u.startswith(_FOLDER) and u != project}
                   for c in _communities(graph, wanted)]
    communities = [c for c in communities if c]
    if not wanted:
        code = [(t - {project}, w) for t, w in zip(touched, recency, strict=True)
                if t - {project}]
        communities = _merge_until_confined(communities, [t for t, _ in code],
                                            [w for _, w in code], weights)
    if project is not None:
        communities.append({project})
    by_code = [t - {project} or t for t in touched]
    groups = _supported(communities, by_code, evidence.coupling.min_support, weights)
    groups = _merge_down(groups, limit, weights)
    for group in groups:
        members = set(group.units)
        group.touched = sum(not members.isdisjoint(t) for t in touched)
        group.alone = sum(t <= members for t in touched)
    return sorted(groups, key=lambda g: (-g.touched, min(g.units)))


def _co_change(touched: list[set[str]], recency: list[float]) -> Weights:
    """A change of n units adds its weight / (n - 1) to each pair, of one unit to its loop."""
    weights: Weights = defaultdict(float)
    for units, weight in zip(touched, recency, strict=True):
        if len(units) == 1:  # a loop: work on one unit alone keeps it apart
            unit = next(iter(units))
            weights[unit, unit] += weight
        for a, b in combinations(sorted(units), 2):
            weights[a, b] += weight / (len(units) - 1)
    return weights


def _graph(nodes: Iterable[str], weights: Weights) -> nx.Graph[str]:
    import networkx as nx  # only here: it takes half a second to import

    graph: nx.Graph[str] = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_weighted_edges_from((a, b, w) for (a, b), w in sorted(weights.items()))
    return graph


def _add_folders(graph: nx.Graph[str], units: Iterable[str], weight: float) -> None:
    """Tie each unit to a node standing for its folder, and each folder to its parent:
    files of one folder lean to one group where the history says little."""
    for unit in units:
        child, folder = unit, posixpath.dirname(unit)
        while True:
            node = _FOLDER + folder
            known = graph.has_node(node)
            graph.add_edge(child, node, weight=weight)
            if known or not folder:
                break
            child, folder = node, posixpath.dirname(folder)


def _communities(graph: nx.Graph[str], wanted: int | None) -> list[set[str]]:
    from networkx.algorithms.community import louvain_communities

    found: list[set[str]] = []
    for resolution in _RESOLUTIONS:
        found = [set(c) for c in louvain_communities(graph, weight="weight",
                                                     resolution=resolution, seed=SEED)]
        if not wanted or len(found) >= wanted:
            break
    return sorted(found, key=min)


def _merge_until_confined(groups: list[set[str]], touched: list[set[str]],
                          recency: list[float], weights: Weights) -> list[set[str]]:
    """Merge the two groups most changes touched together and nothing else (else the
    most coupled two) until ``CONFINED`` of the changes read (recent ones weighing more)
    changed one group alone."""
    groups = [set(g) for g in groups]
    while len(groups) > 1:
        index = {unit: i for i, group in enumerate(groups) for unit in group}
        spans: dict[frozenset[int], float] = defaultdict(float)
        for units, weight in zip(touched, recency, strict=True):
            spans[frozenset(index[u] for u in units)] += weight
        inside = sum(w for span, w in spans.items() if len(span) == 1)
        if inside >= CONFINED * sum(recency):
            break
        pairs = {tuple(sorted(span)): w for span, w in spans.items() if len(span) == 2}
        i, j = max(combinations(range(len(groups)), 2), key=lambda ij: (
            pairs.get(ij, 0.0), _weight(groups[ij[0]], groups[ij[1]], weights),
            -len(groups[ij[0]]) - len(groups[ij[1]])))
        groups[i] |= groups.pop(j)
    return groups


def _supported(communities: list[set[str]], touched: list[set[str]], min_support: int,
               weights: Weights) -> list[Group]:
    """Communities that at least ``min_support`` changes touched alone; each other one
    joins the kept community it changed with most (or the most changed one)."""
    alone = [sum(t <= c for t in touched) for c in communities]
    kept = [Group(sorted(c)) for c, n in zip(communities, alone, strict=True) if n >= min_support]
    weak = [c for c, n in zip(communities, alone, strict=True) if n < min_support]
    if not kept:
        return [Group(sorted(set().union(*communities)))] if communities else []
    for community in sorted(weak, key=lambda c: -len(c)):
        best = max(kept, key=lambda g: (_weight(community, set(g.units), weights),
                                        _common_depth([*community, *g.units]),
                                        -kept.index(g)))
        best.units = sorted({*best.units, *community})
    return kept


def _weight(a: set[str], b: set[str], weights: Weights) -> float:
    return sum(weights.get((min(x, y), max(x, y)), 0.0) for x in a for y in b)


def _merge_down(groups: list[Group], limit: int,
                weights: Weights) -> list[Group]:
    """Merge groups until at most ``limit`` remain: the most coupled first, then those
    nearest by path, then the smallest."""
    while len(groups) > limit:
        i, j = max(combinations(range(len(groups)), 2), key=lambda ij: (
            _weight(set(groups[ij[0]].units), set(groups[ij[1]].units), weights),
            _common_depth(groups[ij[0]].units + groups[ij[1]].units),
            -len(groups[ij[0]].units) - len(groups[ij[1]].units),
        ))
        groups[i].units = sorted({*groups[i].units, *groups.pop(j).units})
    return groups


def _common_depth(paths: list[str]) -> int:
    prefix = posixpath.commonpath(paths)
    return len(prefix.split("/")) if prefix else 0


# -- from groups to streams ----------------------------------------------------------------


class _Drafter:
    def __init__(self, evidence: Evidence) -> None:
        self.ev = evidence
        self.history = evidence.history
        self.total = len(self.history.commits)
        self.owner: dict[str, int] = {}  # tracked file -> group index
        for index, group in enumerate(evidence.groups):
            for key in group.units:
                self.owner.update(dict.fromkeys(evidence.units[key], index))
        self.shared: dict[str, str] = {}  # hot pattern -> reason
        self.root: int | None = None
        # shared hot file -> the pattern of its kind proposed instead ('CHANGES.*')
        self.kinds: dict[str, str] = {}
        self._settle_hot()
        self._place_quiet()

    def _settle_hot(self) -> None:
        """A hot candidate changed with two other groups or more is shared; one no group
        owns is owned by the group it changed with most."""
        for pattern, hot in self.ev.hot.items():
            mine = [p for p in self.ev.tracked if hot_match(pattern, p)]
            own = {self.owner[p] for p in mine if p in self.owner}
            alongside = self._alongside(pattern)
            supported = [g for g, n in alongside.items()
                         if n >= self.ev.coupling.min_support and g not in own]
            if len(supported) >= 2:
                self.shared[pattern] = hot.reason(self.total, len(supported))
                for path in mine:
                    self.owner.pop(path, None)
                kind = kind_pattern(hot, self.ev.tracked)
                if kind:
                    self.kinds[pattern] = kind
                    self.shared[pattern] += f" (as {kind}: the same file in another format later)"
            elif not own and alongside:
                best = max(sorted(alongside), key=lambda g: alongside[g])
                self.owner.update(dict.fromkeys(mine, best))

    def _alongside(self, pattern: str) -> Counter[int]:
        """Commits changing ``pattern`` with the files of each group."""
        found: Counter[int] = Counter()
        for commit in self.history.commits:
            paths = [self.history.paths[i] for i in commit]
            if any(hot_match(pattern, p) for p in paths):
                found.update({self.owner[p] for p in paths
                              if p in self.owner and not hot_match(pattern, p)})
        return found

    def _place_quiet(self) -> None:
        """Files no commit changed join the group owning most of their nearest folder,
        else the root's group (see ``root``)."""
        hot = list(self.shared)
        quiet = [p for p in self.ev.tracked if p not in self.owner
                 and not any(hot_match(h, p) for h in hot)]
        counts: dict[str, Counter[int]] = defaultdict(Counter)
        for path, index in self.owner.items():
            folder = posixpath.dirname(path)
            while folder:
                counts[folder][index] += 1
                folder = posixpath.dirname(folder)
        self.root = self._root()
        for path in quiet:
            folder = posixpath.dirname(path)
            while folder and not counts[folder]:
                folder = posixpath.dirname(folder)
            if folder:
                self.owner[path] = _most(counts[folder])
            elif self.root is not None:
                self.owner[path] = self.root

    def _root(self) -> int | None:
        """The group owning most top-level files (else most files): it also owns the
        top-level folders nobody else does, those created later included."""
        top = Counter(g for path, g in self.owner.items() if "/" not in path)
        return _most(top or Counter(self.owner.values())) if self.owner else None

    # -- patterns ---------------------------------------------------------------------

    def patterns(self) -> dict[int, list[str]]:
        """Each group's patterns, shallow to deep (gitignore: the last match wins)."""
        entries: dict[int, list[tuple[int, str]]] = defaultdict(list)
        tree = _Tree(self.ev.tracked)
        if self.root is not None:
            # '*' reaches every path, files created later at the top level or in a new
            # folder included; what other streams own is excluded below it.
            entries[self.root].append((-2, "*"))
        for top in tree.children(""):
            # Root files first: their '!*/**/name' must not undo a folder's pattern.
            self._walk(tree, top, self.root, entries)
        return {g: [p for _, p in sorted(found, key=lambda e: e[0])]
                for g, found in entries.items()}

    def _walk(self, tree: _Tree, path: str, parent: int | None,
              entries: dict[int, list[tuple[int, str]]]) -> None:
        depth = path.count("/") if "/" in path or tree.is_folder(path) else -1
        literal = literal_pattern(path)
        if not tree.is_folder(path):
            mine = self.owner.get(path)
            if mine != parent:
                if mine is not None:
                    entries[mine].append((depth, self._file_pattern(path)))
                if parent is not None:
                    entries[parent].append((depth, self._file_exclusion(path)))
            return
        under = tree.files_under(path)
        owners = Counter(self.owner[p] for p in under if p in self.owner)
        if not owners and all(any(hot_match(h, p) for h in self.shared) for p in under):
            mine = None  # a shared folder: left out of its parent as a whole
        else:
            mine = _most(owners) if owners else parent
        if mine != parent:
            if mine is not None:
                entries[mine].append((depth, f"{literal}/**"))
            if parent is not None:
                entries[parent].append((depth, f"!{literal}/**"))
        for child in tree.children(path):
            self._walk(tree, child, mine, entries)

    def _file_pattern(self, path: str) -> str:
        literal = literal_pattern(path)
        if "/" in path:
            return literal
        # No leading '/' in a plan: exclude files of the same name below the root instead.
        deeper = any(p.endswith(f"/{path}") for p in self.ev.tracked)
        return f"{literal}\n!*/**/{literal}" if deeper else literal

    def _file_exclusion(self, path: str) -> str:
        """'!path' for the stream owning its folder; at the top level, where '!name'
        reaches every depth, files of that name below the root are taken back."""
        literal = self.kinds.get(path, literal_pattern(path))
        if "/" in path:
            return f"!{literal}"
        deeper = any(p.endswith(f"/{path}") for p in self.ev.tracked)
        return f"!{literal}\n*/**/{literal}" if deeper else f"!{literal}"

    # -- the plan ---------------------------------------------------------------------

    def drafts(self) -> list[StreamDraft]:
        patterns = self.patterns()
        files: dict[int, list[str]] = defaultdict(list)
        for path in self.ev.tracked:
            if path in self.owner:
                files[self.owner[path]].append(path)
        drafts = []
        taken: set[str] = set()
        for index, group in enumerate(self.ev.groups):
            if not files[index]:
                continue
            modules = self._modules(group)
            project = modules[0] == self.ev.project and PROJECT_STREAM not in taken
            name = PROJECT_STREAM if project else _name(files[index], modules, taken)
            taken.add(name)
            drafts.append(StreamDraft(name, files[index], group.touched, group.alone, modules,
                                      [q for p in patterns[index] for q in p.split("\n")]))
        return drafts

    def _modules(self, group: Group) -> list[str]:
        activity = Counter(self.history.paths[i] for c in self.history.commits for i in c)
        score = {key: sum(activity[p] for p in self.ev.units[key]) for key in group.units}
        return sorted(group.units, key=lambda k: (-score[k], k))

    def plan(self, repo: git.Repository, plan_path: Path, branch: str,
             checked_against: History) -> Suggestion:
        """The plan's text, settled until ``wtr check``'s coupling analysis of
        ``checked_against`` (the history it reads) has nothing left to say."""
        drafts = self.drafts()
        shared = dict(self.shared)
        unowned = [p for p in self.ev.tracked if p not in self.owner
                   and not any(hot_match(h, p) for h in shared)]
        tracked = PathIndex(self.ev.tracked)
        text = ""
        for _ in range(len(drafts) ** 2 + len(tracked) + 1):
            text = _Render(self, branch, drafts, shared, unowned).text(repo, plan_path)
            report = couple(parse_plan(text, plan_path), checked_against, branch, tracked)
            if not _settle(report, drafts, shared):
                break
        return Suggestion(text, drafts, self.total)


def kind_pattern(hot: HotPath, tracked: Sequence[str]) -> str | None:
    """A top-level changelog's or lockfile's kind ('CHANGES.rst' -> 'CHANGES.*', 'CHANGES'
    -> 'CHANGES*', 'poetry.lock' -> '*.lock'): a project that moves to 'CHANGES.md' or
    'uv.lock' keeps it shared. None when the kind would take in another file of the base."""
    name = hot.pattern
    if "/" in name or hot.kind not in ("changelog", "lockfile"):
        return None
    if hot.kind == "changelog":
        stem, dot, _ = name.partition(".")
        # 'CHANGES.*' does not match 'CHANGES' itself, which would then be shared by no one.
        kind = f"{literal_pattern(stem)}.*" if dot else f"{literal_pattern(stem)}*"
    elif name.endswith(".lock"):
        kind = "*.lock"
    else:
        return None
    spec = compile_patterns([kind])
    return kind if all(p == name or not spec.match_file(p) for p in tracked) else None


def _most(counts: Counter[int]) -> int:
    """The most counted, the lowest on a tie."""
    return min(counts.most_common(), key=lambda item: (-item[1], item[0]))[0]


class _Tree:
    """Folders and files of the tracked paths."""

    def __init__(self, tracked: Iterable[str]) -> None:
        self.kids: dict[str, set[str]] = defaultdict(set)
        self.under: dict[str, list[str]] = defaultdict(list)
        for path in tracked:
            child = path
            while child:
                parent = posixpath.dirname(child)
                self.kids[parent].add(child)
                if parent:
                    self.under[parent].append(path)
                child = parent

    def children(self, folder: str) -> list[str]:
        return sorted(self.kids.get(folder, ()))

    def is_folder(self, path: str) -> bool:
        return path in self.kids

    def files_under(self, folder: str) -> list[str]:
        return self.under[folder]


def _name(files: list[str], modules: list[str], taken: set[str]) -> str:
    """The folder holding most of the stream's files when that is over half of them
    (and not the repository's one source folder), else its most changed module."""
    folders = Counter(posixpath.dirname(p) for p in files if "/" in p)
    candidates = []
    if folders:
        folder, n = min(folders.most_common(), key=lambda i: (-i[1], i[0]))
        if n * 2 > len(files) and len(files) > 2:
            candidates.append(posixpath.basename(folder))
    candidates += [_stem(m) for m in modules[:3]]
    for candidate in candidates:
        name = stream_name(candidate)
        if name not in taken:
            return name
    base, n = stream_name(candidates[0] if candidates else "part"), 2
    while f"{base[:60]}-{n}" in taken:
        n += 1
    return f"{base[:60]}-{n}"


def _stem(path: str) -> str:
    name = posixpath.basename(path)
    tested = _TEST_NAME.match(name)
    if tested:
        name = next(g for g in tested.groups() if g)
    stem = name.split(".")[0] if not name.startswith(".") else name.lstrip(".").split(".")[0]
    if stem in {"__init__", "index", "mod", ""}:
        return posixpath.basename(posixpath.dirname(path)) or stem or "part"
    return stem


class _Render:
    def __init__(self, drafter: _Drafter, branch: str, drafts: list[StreamDraft],
                 shared: dict[str, str], unowned: list[str]) -> None:
        self.d = drafter
        self.branch = branch
        self.drafts = drafts
        self.shared = shared
        self.unowned = unowned

    def text(self, repo: git.Repository, plan_path: Path) -> str:
        header = plan_header(repo, plan_path, self.branch)
        head, streams_line = header.rstrip("\n").rsplit("\n", 1)
        parts = [self._intro(), head, "\n"]
        if self.shared:
            parts.append(self._shared_text())
        parts.append(streams_line + "\n")
        parts += [self._stream_text(d) for d in self.drafts]
        if self.unowned:
            parts.append(_unowned_text(self.unowned))
        return "".join(parts)

    def _intro(self) -> str:
        h = self.d.history
        since = f" since {self.d.ev.coupling.since}" if self.d.ev.coupling.since else ""
        skipped = (f" ({h.skipped} more left out: each changed over {h.max_files} files)"
                   if h.skipped else "")
        return (
            f"# Suggested by 'wtr init --suggest' from the last {len(h.commits)} changes of "
            f"{self.branch}{since}{skipped}\n# (a change: a commit of its first-parent line, a "
            "merged branch counting as one):\n"
            f"# {len(self.drafts)} streams, each a group of files that changed together "
            "(a module with its\n# tests; community detection on the co-change graph). Check "
            "the grouping, write the\n# prompts, then run 'wtr check'.\n"
        )

    def _shared_text(self) -> str:
        lines = ["# Hot files: changed by many commits, together with the files of several "
                 "streams. A stream\n# may change a shared file only if it lists it, and "
                 "streams listing the same one never\n# run at the same time.\n",
                 "shared:\n"]
        for pattern, why in self.shared.items():
            lines.append(f"  - {_quoted(self.d.kinds.get(pattern, pattern))}    # {why}\n")
        return "".join(lines)

    def _stream_text(self, draft: StreamDraft) -> str:
        names = list(dict.fromkeys(posixpath.basename(m) for m in draft.modules))
        shown = ", ".join(names[:4])
        more = len(names) - 4
        listing = shown + (f" and {more} more" if more > 0 else "")
        lines = [
            f"  {yaml_scalar(draft.name)}:\n",
            f"    description: {yaml_scalar(listing)}\n",
            f"    # {draft.commits} of {self.d.total} changes touched {_files(len(draft.files))}, "
            f"{draft.alone} of them nothing else\n",
            *_files_text(draft.patterns),
            "    prompt: |\n",
            f"      Describe what the agent should do with {listing}.\n",
        ]
        if draft.conflicts_with:
            lines += [f"    # {why}\n" for why in draft.conflicts_with.values()]
            others = ", ".join(draft.conflicts_with)
            lines.append(f"    conflicts_with: [{others}]   # or depends_on: [{others}] if "
                         "this stream builds on their work\n")
        if draft.shared:
            lines.append(f"    shared: [{', '.join(_quoted(p) for p in draft.shared)}]\n")
        touched = self._shared_touched(draft)
        if touched:
            listed = ", ".join(_quoted(self.d.kinds.get(p, p)) for p in touched)
            lines.append(f"    # shared: [{listed}]   # changed "
                         "with these files: list what this stream will change\n")
        return "".join(lines)

    def _shared_touched(self, draft: StreamDraft) -> list[str]:
        mine = set(draft.files)
        found = []
        history = self.d.history
        commits = [[history.paths[i] for i in commit] for commit in history.commits]
        for pattern in self.shared:
            if pattern in draft.shared:
                continue
            with_mine = sum(1 for paths in commits
                            if any(hot_match(pattern, p) for p in paths)
                            and any(p in mine for p in paths))
            if with_mine >= self.d.ev.coupling.min_support:
                found.append(pattern)
        return found


def changes_text(n: int) -> str:
    return f"{n} change" if n == 1 else f"{n} changes"


def _files(n: int) -> str:
    return "this file" if n == 1 else f"these {n} files"


def _files_text(patterns: list[str]) -> list[str]:
    if len(patterns) <= 3:
        return [f"    files: [{', '.join(_quoted(p) for p in patterns)}]\n"]
    return ["    files:\n", *(f"      - {_quoted(p)}\n" for p in patterns)]


def _settle(report: CouplingReport, drafts: list[StreamDraft], shared: dict[str, str]) -> bool:
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
            streams = len(set(hot.owners) | {name for name, _ in hot.alongside})
            shared[hot.path] = HotPath(hot.path, "hot", hot.changes).reason(report.commits, streams,
                                                                      "commits")
            for draft in drafts:
                if hot.path in draft.files:
                    draft.patterns.append(f"!{literal_pattern(hot.path)}")
            changed = True
    return changed


def _unowned_text(paths: list[str]) -> str:
    listing = ", ".join(paths[:20]) + (f" and {len(paths) - 20} more" if len(paths) > 20 else "")
    return ("# Owned by no stream (nothing in the history read places them):\n"
            f"#   {listing}\n# Add them to a stream's files if work there is planned.\n")


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
