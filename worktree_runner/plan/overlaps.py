"""Patterns of two streams that may run at the same time and reach the same paths, even
paths no commit holds yet: both streams may create or change them, and collide at merge.

Three kinds are found: identical patterns; a literal path of one stream that the other's
patterns match; a pattern of one stream lying inside a folder the other owns (its
literal head, e.g. ``scripts/lib/`` of ``scripts/lib/*.sh``, matched by ``scripts/**``).
Patterns that can match anywhere (``*.md``) are compared only when identical.

Each pattern is tried only against the streams owning a pattern whose literal head is a
prefix of it (or that may match anywhere), never against every stream of the plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from worktree_runner.plan.model import Plan
from worktree_runner.plan.patterns import compile_patterns, literal_head

_WILDCARD = re.compile(r"[*?\[\\]")
# Stands for "any name" after a folder: no real path holds this character.
_ANY_NAME = "\x00"


@dataclass(frozen=True)
class PatternOverlap:
    """``patterns[i]`` of ``streams[i]`` both reach ``path`` (a folder ends in '/')."""

    streams: tuple[str, str]
    patterns: tuple[str, str]
    path: str

    def message(self) -> str:
        (a, b), (pa, pb) = self.streams, self.patterns
        how = f"both list '{pa}'" if pa == pb else f"'{pa}' of '{a}' and '{pb}' of '{b}' " \
                                                  f"both reach {self.path}"
        return (f"streams '{a}' and '{b}' may run at the same time and their patterns "
                f"overlap ({how}); files they create there may conflict at merge: order "
                "them with depends_on or conflicts_with, or narrow the patterns")

    def to_json(self) -> dict[str, object]:
        return {"streams": list(self.streams), "patterns": list(self.patterns),
                "path": self.path}


@dataclass(frozen=True)
class StartConflict:
    """``stream`` starts from the merged results of ``predecessors``, which overlap."""

    stream: str
    predecessors: tuple[str, str]
    path: str

    def message(self) -> str:
        a, b = self.predecessors
        return (f"stream '{self.stream}' starts from the results of '{a}' and '{b}', whose "
                f"files overlap ({self.path}); if both change it, their results conflict "
                f"when merged as the start of '{self.stream}': order '{a}' and '{b}' "
                "with depends_on or conflicts_with")

    def to_json(self) -> dict[str, object]:
        return {"stream": self.stream, "predecessors": list(self.predecessors),
                "path": self.path}


def _probe(pattern: str) -> tuple[str, str] | None:
    """A path standing for what ``pattern`` reaches, and how to show it; None when the
    pattern may match anywhere (no literal head) or is a negation."""
    if pattern.startswith("!"):
        return None
    body = pattern.lstrip("/")
    if not _WILDCARD.search(body):
        if body.endswith("/"):
            return body + _ANY_NAME, body
        return body, body
    head = literal_head(pattern)
    if not head:
        return None
    shown = head if head.endswith("/") else head + "*"
    return head + _ANY_NAME, shown


def _normal(pattern: str) -> str:
    return pattern.lstrip("/").rstrip("/") if "/" in pattern.rstrip("/") else pattern


def pattern_overlaps(plan: Plan, may_run_together: Callable[[str, str], bool],
                     skip: set[frozenset[str]]) -> list[PatternOverlap]:
    """Pattern overlaps between streams that may run together; pairs in ``skip`` (already
    reported for a tracked file) are left out. In plan order, one per pair of streams."""
    names = plan.names
    position = {name: i for i, name in enumerate(names)}
    specs = {s.name: compile_patterns(s.files) for s in plan.streams}
    by_head: dict[str, set[str]] = {}
    anywhere: set[str] = set()
    same: dict[str, list[tuple[str, str]]] = {}
    for stream in plan.streams:
        for pattern in stream.files:
            if pattern.startswith("!"):
                continue
            same.setdefault(_normal(pattern), []).append((stream.name, pattern))
            head = literal_head(pattern)
            if head is None:
                anywhere.add(stream.name)
            else:
                by_head.setdefault(head, set()).add(stream.name)
    found: dict[frozenset[str], PatternOverlap] = {}

    def add(a: str, pa: str, b: str, pb: str, path: str) -> None:
        pair = frozenset((a, b))
        if a == b or pair in skip or pair in found or not may_run_together(a, b):
            return
        if position[a] > position[b]:
            a, pa, b, pb = b, pb, a, pa
        found[pair] = PatternOverlap((a, b), (pa, pb), path)

    for owners in same.values():
        for (a, pa), (b, pb) in _pairs(owners):
            add(a, pa, b, pb, pa.lstrip("/"))
    for stream in plan.streams:
        for pattern in stream.files:
            probe = _probe(pattern)
            if probe is None:
                continue
            path, shown = probe
            for other in _owners_reaching(path, by_head, anywhere):
                if other != stream.name and specs[other].match_file(path):
                    theirs = _pattern_matching(plan, other, path)
                    add(stream.name, pattern, other, theirs, shown)
    return sorted(found.values(), key=lambda o: (position[o.streams[0]],
                                                 position[o.streams[1]]))


def _pairs(items: list[tuple[str, str]]) -> Iterable[tuple[tuple[str, str], tuple[str, str]]]:
    for i, first in enumerate(items):
        for second in items[i + 1:]:
            yield first, second


def _owners_reaching(path: str, by_head: dict[str, set[str]],
                     anywhere: set[str]) -> set[str]:
    """Streams with a pattern whose literal head is a prefix of ``path``."""
    found = set(anywhere)
    for end in range(len(path) + 1):
        found.update(by_head.get(path[:end], ()))
    return found


def _pattern_matching(plan: Plan, stream: str, path: str) -> str:
    """The last of the stream's patterns that matches ``path`` (the one gitignore obeys)."""
    patterns = [p for p in plan.stream(stream).files if not p.startswith("!")]
    for pattern in reversed(patterns):
        if compile_patterns([pattern]).match_file(path):
            return pattern
    return patterns[-1]


def start_conflicts(plan: Plan, overlapping: Iterable[tuple[str, str, str]]
                    ) -> list[StartConflict]:
    """Streams starting from two predecessors (depends_on or an earlier conflicts_with)
    that overlap: ``overlapping`` gives (stream, stream, path) for each such pair."""
    starts_of: dict[str, list[str]] = {}
    for stream in plan.streams:
        for before in dict.fromkeys((*stream.depends_on, *stream.waits_for)):
            starts_of.setdefault(before, []).append(stream.name)
    found: list[StartConflict] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for a, b, path in overlapping:
        for name in starts_of.get(a, ()):
            key = (name, frozenset((a, b)))
            if name in starts_of.get(b, ()) and key not in seen:
                seen.add(key)
                found.append(StartConflict(name, (a, b), path))
    return found
