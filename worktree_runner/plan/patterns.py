"""Matching gitignore-style patterns against many paths without trying every path.

A pattern with a '/' before its end is anchored at the repository root, so every path it
matches begins with its literal head (the text before its first wildcard). With paths
sorted, those are one contiguous slice: a stream owning ``area07/**`` is matched against
the files of ``area07/`` only, not against the whole repository.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Sequence

import pathspec
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

_WILDCARD = re.compile(r"[*?\[\\]")


def compile_patterns(patterns: Iterable[str]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(list(patterns), pattern_factory=_compiled)


@functools.lru_cache(maxsize=32768)
def _compiled(pattern: str) -> GitIgnoreSpecPattern:
    """One pattern compiled once: a plan's patterns are matched several times each, and
    compiling a gitignore pattern to a regular expression is most of the cost."""
    return GitIgnoreSpecPattern(pattern)


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` cannot be compiled (e.g. the range in '[z-a]'), or None."""
    try:
        _compiled(pattern)
    except re.error as exc:
        return exc.msg
    except ValueError as exc:
        return str(exc)
    return None


def literal_head(pattern: str) -> str | None:
    """The text every match of ``pattern`` starts with, or None if it may match anywhere."""
    if pattern.startswith(("!", "\\", "#")):
        return None
    rooted = pattern.startswith("/")
    body = pattern.lstrip("/").rstrip("/") if rooted else pattern.rstrip("/")
    if not rooted and "/" not in body:
        return None
    wildcard = _WILDCARD.search(body)
    return body if wildcard is None else body[: wildcard.start()]


class PathIndex:
    """Paths kept sorted, to hand out the ones a pattern can possibly match, and to answer
    "is this path (or folder) in the tree" without another pass over a large tree."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths: list[str] = sorted(paths)
        # Streams often repeat a pattern set (shared paths, a folder owned in turn by
        # ordered streams); an unanchored one costs a match per path of the tree.
        self._matched: dict[tuple[str, ...], frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, path: object) -> bool:
        at = bisect.bisect_left(self.paths, path) if isinstance(path, str) else len(self.paths)
        return at < len(self.paths) and self.paths[at] == path

    def has_folder(self, folder: str) -> bool:
        """Whether some path lies under ``folder`` (given without its trailing '/')."""
        start, end = self._span(folder + "/")
        return start < end

    def starting_with(self, head: str) -> Sequence[str]:
        start, end = self._span(head)
        return self.paths[start:end]

    def _span(self, head: str) -> tuple[int, int]:
        return (bisect.bisect_left(self.paths, head),
                bisect.bisect_left(self.paths, head + "\U0010ffff"))

    def candidates(self, patterns: Sequence[str]) -> Iterable[str]:
        """A superset of the paths ``patterns`` match (negations only ever remove)."""
        heads = [literal_head(p) for p in patterns if not p.startswith("!")]
        if any(head is None for head in heads):
            return self.paths
        found: set[str] = set()
        for head in heads:
            found.update(self.starting_with(head or ""))
        return found

    def matching(self, patterns: Sequence[str]) -> set[str]:
        key = tuple(patterns)
        if key not in self._matched:
            spec = compile_patterns(patterns)
            self._matched[key] = frozenset(
                path for path in self.candidates(patterns) if spec.match_file(path))
        return set(self._matched[key])

    def matches_any(self, pattern: str) -> bool:
        spec = compile_patterns([pattern])
        return any(spec.match_file(path) for path in self.candidates([pattern]))
