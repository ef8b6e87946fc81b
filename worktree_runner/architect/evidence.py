"""What ``wtr plan`` tells the drafting agent about the repository, read from the base.

Everything comes from git at the base commit and its history (nothing from the user's
working tree): the tracked files with sizes and languages, each module with its tests
(by naming, and by the history: a test changed with the module), groups of files that
change together, hot files, the strongest coupled pairs, and the repository's own test
and lint commands (``commands.py``). The history numbers are those of ``wtr check``'s
coupling warnings (``plan/cochange.py``), so what the agent is told to respect is what
the check then holds it to.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import combinations

from worktree_runner import git
from worktree_runner.architect.commands import RepoCommand, repo_commands
from worktree_runner.errors import WtrError
from worktree_runner.plan.cochange import hot_paths
from worktree_runner.plan.history import History, read_history
from worktree_runner.plan.model import Coupling

LANGUAGES = {
    ".py": "Python", ".pyi": "Python", ".js": "JavaScript", ".mjs": "JavaScript",
    ".cjs": "JavaScript", ".jsx": "JavaScript", ".ts": "TypeScript", ".tsx": "TypeScript",
    ".go": "Go", ".rs": "Rust", ".java": "Java", ".kt": "Kotlin", ".rb": "Ruby",
    ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++", ".hpp": "C++", ".cs": "C#",
    ".php": "PHP", ".swift": "Swift", ".scala": "Scala", ".sh": "Shell", ".md": "Markdown",
    ".rst": "reStructuredText", ".txt": "text", ".toml": "TOML", ".yaml": "YAML",
    ".yml": "YAML", ".json": "JSON", ".html": "HTML", ".css": "CSS", ".scss": "CSS",
    ".sql": "SQL", ".cfg": "config", ".ini": "config", ".lock": "lockfile",
}
# Files every change tends to touch, whatever the history says: candidates for `shared`.
HOT_NAMES = re.compile(
    r"(?i)^(changelog|changes|history|news|releases?)(\.(md|rst|txt|adoc|markdown))?$|\.lock$"
    r"|^(package-lock\.json"
    r"|pnpm-lock\.yaml|go\.sum|poetry\.lock|uv\.lock|yarn\.lock|cargo\.lock)$")
_TEST_FILE = re.compile(
    r"^(?:test_(?P<a>.+)|(?P<b>.+?)(?:_test|_spec|Test|Tests|\.test|\.spec))"
    r"(?P<ext>\.[A-Za-z0-9]+)$")
SHOWN_PAIRS = 40
LOOSER = 0.6  # the share of the check's min_confidence that still groups files
SHOWN_CLUSTERS = 30


@dataclass(frozen=True)
class TrackedFile:
    path: str
    size: int
    language: str


@dataclass(frozen=True)
class Pair:
    paths: tuple[str, str]
    together: int
    either: int

    @property
    def confidence(self) -> float:
        return self.together / self.either


@dataclass
class Evidence:
    branch: str
    commit: str
    files: list[TrackedFile]
    commits_read: int
    tests: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # module -> (test, why)
    clusters: list[list[str]] = field(default_factory=list)  # by the loosened thresholds
    hot: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    pairs: list[Pair] = field(default_factory=list)
    commands: list[RepoCommand] = field(default_factory=list)
    suggestion: str | None = None  # what 'wtr init --suggest' proposes: a starting point

    def languages(self) -> Counter[str]:
        return Counter(f.language for f in self.files)


def gather(repo: git.Repository, branch: str, commit: str,
           settings: Coupling | None = None) -> Evidence:
    settings = settings or Coupling()
    files = tracked_with_sizes(repo, commit)
    tracked = {f.path for f in files}
    history = read_history(repo, commit, settings.commits, settings.since)
    hot = set(hot_paths(history, settings))
    pairs = coupled_pairs(history, tracked - hot, settings)
    loose = coupled_pairs(history, tracked - hot, loosened(settings))
    return Evidence(
        branch=branch, commit=commit, files=files, commits_read=len(history.commits),
        tests=tests_of_modules(sorted(tracked), loose),
        clusters=clusters(loose),
        hot=hot_files(history, tracked, settings),
        pairs=pairs[:SHOWN_PAIRS],
        commands=repo_commands(repo, commit, tracked),
        suggestion=suggested(repo),
    )


def suggested(repo: git.Repository) -> str | None:
    """The plan ``wtr init --suggest`` would write from the same history (the checked-out
    branch's); None when it has nothing to say."""
    from worktree_runner.plan.suggest import suggest_plan

    try:
        suggestion = suggest_plan(repo, repo.toplevel / "suggested.yaml")
    except WtrError:
        return None
    return None if suggestion.note else suggestion.text


def loosened(settings: Coupling) -> Coupling:
    """Weaker links than the check warns about, for grouping: files that change together
    now and then still belong together when nothing says otherwise."""
    return replace(settings, min_support=max(2, settings.min_support - 2),
                   min_confidence=settings.min_confidence * LOOSER)


def tracked_with_sizes(repo: git.Repository, commit: str) -> list[TrackedFile]:
    out = repo.git("ls-tree", "-r", "-l", "-z", "--full-tree", commit).stdout
    found = []
    for entry in filter(None, out.split("\0")):
        head, _, path = entry.partition("\t")
        size = head.split()[-1]
        found.append(TrackedFile(path, int(size) if size.isdigit() else 0, language_of(path)))
    return found


def language_of(path: str) -> str:
    name = posixpath.basename(path)
    suffix = posixpath.splitext(name)[1].lower()
    if name in ("Makefile", "makefile", "GNUmakefile"):
        return "Makefile"
    if name == "Dockerfile":
        return "Docker"
    return LANGUAGES.get(suffix, suffix.lstrip(".") or "other")


def coupled_pairs(history: History, paths: set[str], settings: Coupling) -> list[Pair]:
    """Pairs of ``paths`` changed together at least ``min_support`` times, with a
    confidence of at least ``min_confidence``. Strongest first."""
    counts: Counter[int] = Counter()
    together: Counter[tuple[int, int]] = Counter()
    keep = {i for i, p in enumerate(history.paths) if p in paths}
    for commit in history.commits:
        ids = sorted(i for i in commit if i in keep)
        counts.update(ids)
        together.update(combinations(ids, 2))
    pairs = []
    for (a, b), both in together.items():
        either = counts[a] + counts[b] - both
        if both >= settings.min_support and both >= settings.min_confidence * either:
            pairs.append(Pair((history.paths[a], history.paths[b]), both, either))
    pairs.sort(key=lambda p: (-p.confidence, -p.together, p.paths))
    return pairs


def is_test(path: str) -> bool:
    parts = path.split("/")
    return bool(_TEST_FILE.match(parts[-1])) or any(
        p in ("tests", "test", "spec", "__tests__") for p in parts[:-1])


def tests_of_modules(tracked: list[str], pairs: Iterable[Pair]) -> dict[str, list[tuple[str, str]]]:
    """Each module with the tests that go with it: by name (test_x.py, x_test.go,
    x.test.ts, XTest.java...) and by history (changed together)."""
    modules = [p for p in tracked if not is_test(p)]
    by_stem: dict[tuple[str, str], list[str]] = {}
    for path in modules:
        stem, ext = posixpath.splitext(posixpath.basename(path))
        by_stem.setdefault((stem, ext), []).append(path)
    found: dict[str, list[tuple[str, str]]] = {}
    for path in tracked:
        match = _TEST_FILE.match(posixpath.basename(path))
        if not match:
            continue
        subject = (match.group("a") or match.group("b"), match.group("ext"))
        for module in _nearest(path, by_stem.get(subject, [])):
            found.setdefault(module, []).append((path, "by name"))
    module_set = set(modules)
    for pair in pairs:
        a, b = pair.paths
        for module, test in ((a, b), (b, a)):
            if module in module_set and is_test(test) and \
                    all(test != t for t, _ in found.get(module, [])):
                found.setdefault(module, []).append(
                    (test, f"changed together in {pair.together} of {pair.either} commits"))
    return dict(sorted(found.items()))


def _nearest(test: str, modules: list[str]) -> list[str]:
    """The modules sharing the longest leading folders with ``test``."""
    if len(modules) <= 1:
        return modules
    def shared(module: str) -> int:
        return len(posixpath.commonpath([test, module]).split("/"))
    best = max(map(shared, modules))
    return [m for m in modules if shared(m) == best]


def clusters(pairs: Iterable[Pair]) -> list[list[str]]:
    """Files linked by coupled pairs (connected components), biggest first."""
    import networkx as nx  # only here: it takes half a second to import

    graph: nx.Graph[str] = nx.Graph()
    graph.add_edges_from(p.paths for p in pairs)
    found = [sorted(c) for c in nx.connected_components(graph)]
    return sorted(found, key=lambda c: (-len(c), c))[:SHOWN_CLUSTERS]


def hot_files(history: History, tracked: set[str], settings: Coupling) -> list[tuple[str, str]]:
    total = len(history.commits)
    found = {path: f"changed by {n} of {total} commits"
             for path, n in hot_paths(history, settings).items() if path in tracked}
    for path in sorted(tracked):
        if path not in found and HOT_NAMES.search(posixpath.basename(path)):
            found[path] = "a changelog or lockfile: every change may touch it"
    return sorted(found.items())
